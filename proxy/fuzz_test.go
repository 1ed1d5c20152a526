package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzTemplate parses a route path and a template against it. Whatever the
// input: no panic; a parsed template renders back to its source; and a
// channel expanded from untrusted values either fails or is built only from
// the template's literals and values channelSafe accepts, so a value can
// never add a separator or a glob to a channel name.
func FuzzTemplate(f *testing.F) {
	f.Fuzz(func(t *testing.T, path, tmpl string, channel bool, p1, p2, user, tenant string) {
		params, err := pathParams(path)
		if err != nil {
			params = nil
		}
		for _, p := range params {
			if !validName(p) || reservedName(p) {
				t.Fatalf("pathParams(%q) returned bad parameter %q", path, p)
			}
		}
		tp, err := parseTemplate(tmpl, params, channel)
		if err != nil {
			return
		}
		// Every placeholder is one the route can fill.
		for _, pt := range tp.parts {
			if pt.name == "" {
				if strings.ContainsAny(pt.lit, "{}") {
					t.Fatalf("literal %q of %q holds a brace", pt.lit, tmpl)
				}
				continue
			}
			known := contains(params, pt.name) ||
				channel && (pt.name == "user" || pt.name == "tenant" ||
					strings.HasPrefix(pt.name, "claims.") && validName(pt.name[len("claims."):]))
			if !known {
				t.Fatalf("parseTemplate(%q, %q, %v) accepted unknown placeholder {%s}", tmpl, params, channel, pt.name)
			}
		}
		if got := tp.expand(func(name string) string { return "{" + name + "}" }); got != tmpl {
			t.Fatalf("template %q renders back as %q", tmpl, got)
		}
		if !channel {
			return
		}

		values := map[string]string{"user": user, "tenant": tenant}
		for i, p := range params {
			values[p] = []string{p1, p2}[i%2]
		}
		var literals strings.Builder
		allSafe := true
		for _, pt := range tp.parts {
			if pt.name == "" {
				literals.WriteString(pt.lit)
				continue
			}
			v := values[pt.name]
			if strings.HasPrefix(pt.name, "claims.") {
				v = p2
			}
			allSafe = allSafe && channelSafe(v)
		}
		got, err := tp.expandChannel(func(name string) (string, bool) {
			if strings.HasPrefix(name, "claims.") {
				return p2, true
			}
			v, ok := values[name]
			return v, ok && v != ""
		})
		if allSafe && err != nil {
			t.Fatalf("expandChannel refused safe values: %v", err)
		}
		if !allSafe && err == nil {
			t.Fatalf("expandChannel(%q) accepted an unsafe value, producing %q", tmpl, got)
		}
		if err != nil {
			return
		}
		lit := literals.String()
		for _, sep := range []string{":", "*", "?", "[", "]", "{", "}", "\\", "/", "\x00", " ", "\n"} {
			if strings.Count(got, sep) != strings.Count(lit, sep) {
				t.Fatalf("channel %q from %q has %d %q, its literals %d", got, tmpl, strings.Count(got, sep), sep, strings.Count(lit, sep))
			}
		}
	})
}

// FuzzOriginMatcher checks an allowed_origins pattern and an Origin against
// it. Whatever the input: no panic; and an Origin is allowed only if it is
// exactly a listed origin or, for a wildcard, a subdomain of it with the
// same scheme (no user info, path or other trick).
func FuzzOriginMatcher(f *testing.F) {
	f.Fuzz(func(t *testing.T, pattern, origin, host string) {
		r := &http.Request{Host: host, Header: http.Header{}}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		// Same-host mode (no allowed_origins): scheme and host must match.
		for _, scheme := range []string{"http", "https"} {
			if newOriginMatcher(nil).allowed(r, scheme) && origin != "" {
				u, err := url.Parse(strings.ToLower(origin))
				if err != nil || !strings.EqualFold(u.Host, host) || u.Scheme != scheme {
					t.Fatalf("same-host mode allowed Origin %q for %s://%s", origin, scheme, host)
				}
			}
		}
		if checkOriginPattern(pattern) != nil {
			return
		}
		allowed := newOriginMatcher([]string{pattern}).allowed(r, "https")
		if !allowed || origin == "" {
			return
		}
		o, p := strings.ToLower(origin), strings.ToLower(pattern)
		if o == p {
			return
		}
		scheme, suffix, wildcard := strings.Cut(p, "://*.")
		if !wildcard {
			t.Fatalf("pattern %q allowed a different Origin %q", pattern, origin)
		}
		u, err := url.Parse(o)
		if err != nil {
			// Not an origin any browser sends; the matcher still must not
			// allow one that names another scheme.
			if !strings.HasPrefix(o, scheme+"://") {
				t.Fatalf("pattern %q allowed Origin %q of another scheme", pattern, origin)
			}
			return
		}
		if u.Scheme != scheme || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			t.Fatalf("pattern %q allowed Origin %q (scheme %q, user %v, path %q)", pattern, origin, u.Scheme, u.User, u.Path)
		}
		if !strings.HasSuffix(u.Host, "."+suffix) {
			t.Fatalf("pattern %q allowed Origin %q whose host %q is not under %q", pattern, origin, u.Host, suffix)
		}
	})
}
