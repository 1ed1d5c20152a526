package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"
)

// upgradeTransport is the http.RoundTripper behind upstream dials. Each
// request gets its own TCP (and TLS) connection, written and read on the
// caller's goroutine: no pool, no background goroutines, small buffers. A
// 101 response's Body is the connection itself, as coder/websocket expects.
type upgradeTransport struct {
	dialer *net.Dialer
	tls    *tls.Config // nil: system defaults
}

var _ http.RoundTripper = (*upgradeTransport)(nil)

func (t *upgradeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	host := req.URL.Host
	if req.URL.Port() == "" {
		port := "80"
		if req.URL.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(req.URL.Hostname(), port)
	}
	conn, err := t.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	// ctx bounds the whole exchange: its deadline, and its cancellation.
	if dl, has := ctx.Deadline(); has {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if req.URL.Scheme == "https" {
		cfg := &tls.Config{}
		if t.tls != nil {
			cfg = t.tls.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = req.URL.Hostname()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		conn = tc
	}
	bw := bufio.NewWriterSize(conn, 1024)
	if err := req.Write(bw); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if !stop() {
		return nil, ctx.Err() // cancelled just now: the deadline was poisoned
	}
	conn.SetDeadline(time.Time{})
	ok = true
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if slot, _ := ctx.Value(connSlotKey{}).(*net.Conn); slot != nil {
			*slot = conn
		}
		resp.Body = &upgraded{Conn: conn, r: br}
	} else {
		resp.Body = &closingBody{Reader: io.LimitReader(resp.Body, 4096), c: conn}
	}
	return resp, nil
}

// connSlotKey marks a dial context carrying a *net.Conn that RoundTrip sets
// to the upgraded connection, so its owner can drop it outright when a close
// handshake overruns (see closeBounded).
type connSlotKey struct{}

// upgraded is the connection after a 101: reads drain what the response
// reader buffered first.
type upgraded struct {
	net.Conn
	r *bufio.Reader
}

func (u *upgraded) Read(p []byte) (int, error) {
	if u.r != nil {
		if u.r.Buffered() > 0 {
			return u.r.Read(p)
		}
		u.r = nil // drop the handshake buffer once it is empty
	}
	return u.Conn.Read(p)
}

// closingBody closes the connection with the body of a refused handshake.
type closingBody struct {
	io.Reader
	c net.Conn
}

func (b *closingBody) Close() error { return b.c.Close() }
