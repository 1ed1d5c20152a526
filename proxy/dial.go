package proxy

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
)

// newDialClient returns the HTTP client used for upstream handshakes: one
// fresh connection per dial on the caller's goroutine (upgradeTransport), no
// proxies from the environment, no redirects.
func newDialClient(timeout time.Duration, tlsConfig *tls.Config) *http.Client {
	return &http.Client{
		Transport:     &upgradeTransport{dialer: &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}, tls: tlsConfig},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// dial opens the upstream leg. The upstream sees the token only in the
// Authorization header, never in its URL, and never sees identity headers
// the client tried to set.
func (h *Handler) dial(ctx context.Context, r *http.Request, rt *route, token string, id *auth.Identity, hs *handshake) error {
	reqID := hs.reqID
	target := rt.upstreamURL(r)
	var ours []string
	if rt.cfg.History != nil {
		ours = append(ours, SinceParam)
	}
	ours = append(ours, h.ownQueryParams()...) // ?ticket= (ticket.go)
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
	if err := h.assert(hdr, target, id, reqID); err != nil { // X-Wsgate-Assertion (assertion.go)
		return err
	}
	// X-Forwarded-* from the peer are kept only when the peer is a trusted
	// proxy (the gateway in front); a direct client cannot choose them.
	peer := clientIP(r)
	fromProxy := h.peerTrusted(r)
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
	subprotocols := h.verifier.Subprotocols(r.Header)
	ctx, span := startDial(ctx, target, hdr) // tracing hook (trace.go): span, and its traceparent in hdr
	start := time.Now()
	var err error
	var resp *http.Response
	if rt.passthrough() {
		resp, err = h.dialWire(ctx, target, hdr, subprotocols, hs)
	} else {
		resp, err = h.dialConn(ctx, target, hdr, subprotocols, hs)
	}
	h.metrics.dialSeconds.WithLabelValues(rt.cfg.Path).Observe(time.Since(start).Seconds())
	endDial(span, resp, err) // tracing hook (trace.go)
	if err != nil {
		switch {
		case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
			return &UpstreamError{Status: resp.StatusCode}
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
			return ErrUpstreamTimeout
		case resp != nil:
			return ErrUpstreamProtocol
		}
		return ErrUpstreamDown
	}
	return nil
}

// dialConn dials through coder/websocket, for routes whose messages wsgate
// reads or writes itself (channels).
func (h *Handler) dialConn(ctx context.Context, target string, hdr http.Header, subprotocols []string, hs *handshake) (*http.Response, error) {
	var raw net.Conn
	ctx = context.WithValue(ctx, connSlotKey{}, &raw)
	onPing, onPong := hs.budgetControl(h, sideUpstream)
	conn, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{
		HTTPClient:      h.dialer,
		HTTPHeader:      hdr,
		Subprotocols:    subprotocols,
		CompressionMode: websocket.CompressionDisabled,
		OnPingReceived:  onPing,
		OnPongReceived:  onPong,
	})
	if err != nil {
		return resp, err
	}
	conn.SetReadLimit(h.cfg.MaxMessageBytes)
	hs.upstream, hs.upstreamRaw = conn, raw
	return resp, nil
}

// dialWire runs the upstream handshake of a passthrough route itself
// (RFC 6455 §4.1) over upgradeTransport; the connection becomes the
// upstream wire.
func (h *Handler) dialWire(ctx context.Context, target string, hdr http.Header, subprotocols []string, hs *handshake) (*http.Response, error) {
	switch {
	case strings.HasPrefix(target, "ws://"):
		target = "http://" + target[len("ws://"):]
	case strings.HasPrefix(target, "wss://"):
		target = "https://" + target[len("wss://"):]
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req.Header = hdr
	hdr.Set("Connection", "Upgrade")
	hdr.Set("Upgrade", "websocket")
	hdr.Set("Sec-WebSocket-Version", "13")
	hdr.Set("Sec-WebSocket-Key", key)
	if len(subprotocols) > 0 {
		hdr.Set("Sec-WebSocket-Protocol", strings.Join(subprotocols, ", "))
	}
	resp, err := h.dialer.Transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	up, ok := resp.Body.(*upgraded)
	if !ok {
		resp.Body.Close()
		return resp, errors.New("upstream refused the upgrade")
	}
	sub := resp.Header.Get("Sec-WebSocket-Protocol")
	switch {
	case !headerHasToken(resp.Header, "Connection", "upgrade") || !headerHasToken(resp.Header, "Upgrade", "websocket"):
		err = errors.New("upstream 101 without the upgrade headers")
	case resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key):
		err = errors.New("upstream 101 with a wrong Sec-WebSocket-Accept")
	case sub != "" && !slices.Contains(subprotocols, sub):
		err = errors.New("upstream chose a subprotocol it was not offered")
	case resp.Header.Get("Sec-WebSocket-Extensions") != "":
		err = errors.New("upstream negotiated an extension it was not offered")
	}
	if err != nil {
		up.Close()
		return resp, err
	}
	var pending []byte
	if up.r != nil && up.r.Buffered() > 0 {
		pending, _ = up.r.Peek(up.r.Buffered()) // frames sent right behind the 101
	}
	hs.uw = newWire(up.Conn, pending, false)
	hs.upstreamRaw, hs.subprotocol = up.Conn, sub
	return resp, nil
}

// acceptKey is Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
