package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// echoUpstream is the soak's upstream: a loopback WebSocket server that
// sends every message back as it came. close stops it and waits for every
// connection handler.
type echoUpstream struct {
	srv      *http.Server
	ln       net.Listener
	serveErr chan error
	handlers sync.WaitGroup
	live     atomic.Int64
	once     sync.Once
}

func startEchoUpstream() (*echoUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &echoUpstream{ln: ln, serveErr: make(chan error, 1)}
	u.srv = &http.Server{Handler: http.HandlerFunc(u.serveConn), ReadHeaderTimeout: 5 * time.Second}
	go func() { u.serveErr <- u.srv.Serve(ln) }()
	return u, nil
}

func (u *echoUpstream) addr() string { return u.ln.Addr().String() }

// open is the number of upstream connections not yet ended.
func (u *echoUpstream) open() int64 { return u.live.Load() }

func (u *echoUpstream) serveConn(w http.ResponseWriter, r *http.Request) {
	u.handlers.Add(1)
	defer u.handlers.Done()
	if r.URL.Query().Has("token") || r.Header.Get("X-User-Id") == "" {
		// wsgate must strip the query token and send the identity header.
		http.Error(w, "token in the query or no X-User-Id", http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	u.live.Add(1)
	defer u.live.Add(-1)
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	ctx := context.Background()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, b); err != nil {
			return
		}
	}
}

// close stops accepting, drops any connection still open, and waits for
// every handler.
func (u *echoUpstream) close() {
	u.once.Do(func() {
		u.srv.Close() // hijacked WebSockets are not closed by this
		<-u.serveErr
		done := make(chan struct{})
		go func() { u.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})
}
