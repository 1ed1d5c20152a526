package auth

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/wsgate/wsgate/internal/query"
)

// Source says where a token was found.
type Source uint8

// Token sources, in the order Extract tries them.
const (
	SourceNone Source = iota
	SourceHeader
	SourceQuery
	SourceSubprotocol
	SourceCookie
)

func (s Source) String() string {
	switch s {
	case SourceHeader:
		return "header"
	case SourceQuery:
		return "query"
	case SourceSubprotocol:
		return "subprotocol"
	case SourceCookie:
		return "cookie"
	}
	return "none"
}

// Extract finds the token a handshake carries, trying in order: the
// Authorization: Bearer header, the query parameter, a Sec-WebSocket-Protocol
// entry with the configured prefix, and the configured cookie. A carrier that
// is present but malformed (two query tokens, bad base64) is an error rather
// than a fall-through, so a request cannot smuggle a second credential.
func (v *Verifier) Extract(r *http.Request) (string, Source, error) {
	return extract(&v.cfg, r)
}

func extract(cfg *Config, r *http.Request) (string, Source, error) {
	if h := r.Header.Values("Authorization"); len(h) > 0 {
		if len(h) > 1 {
			return "", SourceHeader, fmt.Errorf("%w: more than one Authorization header", ErrMalformed)
		}
		scheme, tok, ok := strings.Cut(h[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", SourceHeader, fmt.Errorf("%w: Authorization is not a Bearer token", ErrMalformed)
		}
		return strings.TrimSpace(tok), SourceHeader, nil
	}
	if tok, found, err := queryToken(r.URL.RawQuery, cfg.QueryParam); found || err != nil {
		return tok, SourceQuery, err
	}
	for _, p := range offeredSubprotocols(r.Header) {
		if enc, ok := strings.CutPrefix(p, cfg.SubprotocolPrefix); ok {
			b, err := base64.RawURLEncoding.DecodeString(enc)
			if err != nil || len(b) == 0 {
				return "", SourceSubprotocol, fmt.Errorf("%w: subprotocol token is not base64url", ErrMalformed)
			}
			return string(b), SourceSubprotocol, nil
		}
	}
	if cfg.Cookie != "" {
		// Two cookies of one name are what cookie tossing from a sibling
		// subdomain looks like: which one the issuer set cannot be told.
		switch cs := r.CookiesNamed(cfg.Cookie); {
		case len(cs) > 1:
			return "", SourceCookie, fmt.Errorf("%w: more than one %q cookie", ErrMalformed, cfg.Cookie)
		case len(cs) == 1 && cs[0].Value != "":
			return cs[0].Value, SourceCookie, nil
		}
	}
	return "", SourceNone, ErrNoToken
}

// queryToken returns the value of param in rawQuery. Two occurrences are an
// error: which one a proxy in front would have logged or checked is unclear.
func queryToken(rawQuery, param string) (tok string, found bool, err error) {
	vals, ok := query.Values(rawQuery, param)
	switch {
	case !ok:
		return "", true, fmt.Errorf("%w: query token is not URL-encoded", ErrMalformed)
	case len(vals) == 0:
		return "", false, nil
	case len(vals) > 1:
		return "", true, fmt.Errorf("%w: more than one %q query parameter", ErrMalformed, param)
	case vals[0] == "":
		return "", true, ErrNoToken
	}
	return vals[0], true, nil
}

// StripQuery returns rawQuery without the token parameter and any extra
// names, keeping the other parameters in their original order and encoding.
func (v *Verifier) StripQuery(rawQuery string, extra ...string) string {
	return query.Strip(rawQuery, append(extra, v.cfg.QueryParam)...)
}

// Subprotocols returns the subprotocols the client offered, minus any entry
// carrying a token, in the client's order.
func (v *Verifier) Subprotocols(h http.Header) []string {
	offered := offeredSubprotocols(h)
	out := offered[:0:0]
	for _, p := range offered {
		if !strings.HasPrefix(p, v.cfg.SubprotocolPrefix) {
			out = append(out, p)
		}
	}
	return out
}

func offeredSubprotocols(h http.Header) []string {
	var out []string
	for _, line := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(line, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
