package proxy

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// originMatcher decides whether a browser Origin may connect.
type originMatcher struct {
	exact    map[string]bool
	suffixes []string // "https://" + ".example.com" style pairs, as scheme|suffix
}

func checkOriginPattern(p string) error {
	u, err := url.Parse(strings.Replace(p, "*.", "x.", 1))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
		return errors.New("must be an origin such as https://app.example.com or https://*.example.com")
	}
	if strings.Count(p, "*") > 1 || strings.Contains(p, "*") && !strings.Contains(p, "://*.") {
		return errors.New("a wildcard may only be the first label: https://*.example.com")
	}
	return nil
}

func newOriginMatcher(patterns []string) originMatcher {
	m := originMatcher{exact: make(map[string]bool)}
	for _, p := range patterns {
		p = strings.ToLower(p)
		if scheme, rest, ok := strings.Cut(p, "://*."); ok {
			m.suffixes = append(m.suffixes, scheme+"://|."+rest)
			continue
		}
		m.exact[p] = true
	}
	return m
}

// allowed: no Origin (not a browser) passes; otherwise the Origin must be
// listed, or, with no list, name the same scheme and host the request was
// sent to (scheme is "http" or "https", see requestScheme): a page on
// http://app.example.com must not ride the cookies of https://app.example.com.
func (m originMatcher) allowed(r *http.Request, scheme string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	origin = strings.ToLower(origin)
	if len(m.exact) == 0 && len(m.suffixes) == 0 {
		u, err := url.Parse(origin)
		return err == nil && u.Scheme == scheme && strings.EqualFold(u.Host, r.Host)
	}
	if m.exact[origin] {
		return true
	}
	for _, s := range m.suffixes {
		prefix, suffix, _ := strings.Cut(s, "|")
		if host, ok := strings.CutPrefix(origin, prefix); ok && strings.HasSuffix(host, suffix) && len(host) > len(suffix) &&
			!strings.ContainsAny(host, "/?#@") {
			return true
		}
	}
	return false
}

// requestScheme is the scheme the client used to reach wsgate: "https" over
// TLS, the X-Forwarded-Proto of a trusted proxy in front (ws and wss, which
// Traefik sends on upgrades, count as http and https), else "http".
func requestScheme(r *http.Request, fromTrustedProxy bool) string {
	if r.TLS != nil {
		return "https"
	}
	if fromTrustedProxy {
		switch strings.ToLower(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto"))) {
		case "https", "wss":
			return "https"
		}
	}
	return "http"
}
