// Package query reads and edits raw URL query strings without re-encoding
// the parameters it leaves alone.
package query

import (
	"net/url"
	"strings"
)

// Values returns every value of name in rawQuery, unescaped. A value that
// cannot be unescaped is reported through ok=false.
func Values(rawQuery, name string) (vals []string, ok bool) {
	ok = true
	for rest := rawQuery; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		k, v, _ := strings.Cut(part, "=")
		if key, err := url.QueryUnescape(k); err != nil || key != name {
			continue
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			ok = false
			continue
		}
		vals = append(vals, val)
	}
	return vals, ok
}

// Strip returns rawQuery without the named parameters, keeping the others
// in their original order and encoding.
func Strip(rawQuery string, names ...string) string {
	if rawQuery == "" {
		return ""
	}
	var b strings.Builder
	for rest := rawQuery; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		if part == "" {
			continue
		}
		k, _, _ := strings.Cut(part, "=")
		if key, err := url.QueryUnescape(k); err == nil && contains(names, key) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
