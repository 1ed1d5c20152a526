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
// listed, or, with no list, name the same host the request was sent to.
func (m originMatcher) allowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	origin = strings.ToLower(origin)
	if len(m.exact) == 0 && len(m.suffixes) == 0 {
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
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
