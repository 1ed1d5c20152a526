package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
)

// newDialClient returns the HTTP client used for upstream handshakes: one
// fresh connection per dial on the caller's goroutine (upgradeTransport), no
// proxies from the environment, no redirects.
func newDialClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Transport:     &upgradeTransport{dialer: &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// dial opens the upstream leg. The upstream sees the token only in the
// Authorization header, never in its URL, and never sees identity headers
// the client tried to set.
func (h *Handler) dial(ctx context.Context, r *http.Request, rt *route, token string, id *auth.Identity, reqID string) (*websocket.Conn, net.Conn, error) {
	target := rt.upstream.expand(func(name string) string { return url.PathEscape(r.PathValue(name)) })
	var ours []string
	if rt.cfg.History != nil {
		ours = append(ours, SinceParam)
	}
	if q := h.verifier.StripQuery(r.URL.RawQuery, ours...); q != "" {
		target += "?" + q
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	hdr.Set("X-User-Id", id.User)
	if id.Tenant != "" {
		hdr.Set("X-Tenant-Id", id.Tenant)
	}
	hdr.Set("X-Request-Id", reqID)
	// X-Forwarded-* from the peer are kept only when the peer is a trusted
	// proxy (the gateway in front); a direct client cannot choose them.
	peer := clientIP(r)
	fromProxy := false
	if ip := net.ParseIP(peer); ip != nil && inNets(ip, h.trusted) {
		fromProxy = true
	}
	forwarded := func(name, derived string) string {
		if v := r.Header.Get(name); fromProxy && v != "" {
			return v
		}
		return derived
	}
	xff := peer
	if prior := forwarded("X-Forwarded-For", ""); prior != "" {
		xff = prior + ", " + peer
	}
	hdr.Set("X-Forwarded-For", xff)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	hdr.Set("X-Forwarded-Proto", forwarded("X-Forwarded-Proto", proto))
	hdr.Set("X-Forwarded-Host", forwarded("X-Forwarded-Host", r.Host))
	if ua := r.Header.Get("User-Agent"); ua != "" {
		hdr.Set("User-Agent", ua)
	}

	ctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	defer cancel()
	var raw net.Conn
	ctx = context.WithValue(ctx, connSlotKey{}, &raw)
	start := time.Now()
	conn, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{
		HTTPClient:      h.dialer,
		HTTPHeader:      hdr,
		Subprotocols:    h.verifier.Subprotocols(r.Header),
		CompressionMode: websocket.CompressionDisabled,
	})
	h.metrics.dialSeconds.WithLabelValues(rt.cfg.Path).Observe(time.Since(start).Seconds())
	if err != nil {
		switch {
		case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
			return nil, nil, &UpstreamError{Status: resp.StatusCode}
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
			return nil, nil, ErrUpstreamTimeout
		case resp != nil:
			return nil, nil, ErrUpstreamProtocol
		}
		return nil, nil, ErrUpstreamDown
	}
	conn.SetReadLimit(h.cfg.MaxMessageBytes)
	return conn, raw, nil
}
