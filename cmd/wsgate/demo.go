package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	jsclient "github.com/wsgate/wsgate/clients/js"
	"github.com/wsgate/wsgate/demo"
	"github.com/wsgate/wsgate/proxy"
)

// cmdDemo runs wsgate on its embedded default: the demo upstream on a
// loopback port, the in-process broker, and the demo page. It needs no
// other service. Flags and WSGATE_* variables work as for serve, except that
// routes and the secret are the demo's own.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	v := newViper(fs)
	v.Set("auth.hmac_secret", demo.Secret)
	v.Set("redis.url", "")
	v.Set("auth.jwks_url", "")
	v.Set("auth.public_keys", []string{})

	// The demo upstream: a plain loopback server owned by this function.
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "demo: listen:", err)
		return 1
	}
	up := &http.Server{Handler: demo.Upstream(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); up.Serve(upLn) }()
	defer func() { up.Close(); <-done }()

	v.Set("routes", []map[string]any{
		{"path": "/ws/chat", "upstream": "ws://" + upLn.Addr().String() + "/ws/chat"},
		// The same chat, for clients that send their token as their first message.
		{"path": "/ws/assistant", "upstream": "ws://" + upLn.Addr().String() + "/ws/chat", "auth": "first_message"},
		{"path": "/ws/ai/stream/{session}", "subscribe": []string{"ai:stream:{session}"}, "require": map[string]string{"session": "sid"}},
		{"path": "/ws/ai/durable/{session}", "subscribe": []string{"ai:durable:{session}"}, "require": map[string]string{"session": "sid"},
			"history": map[string]any{"size": 1000, "ttl": "10m"}},
		{"path": "/ws/notifications", "subscribe": []string{"notifications:{tenant}:{user}"}},
		{"path": "/ws/collaboration/{doc}", "subscribe": []string{"collab:{tenant}:{doc}"}, "publish": "collab:{tenant}:{doc}"},
	})
	cfg, err := decodeConfig(v)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	tok, _ := auth.MintHS256([]byte(demo.Secret), map[string]any{
		"sub": "alice", "tenant_id": "demo", "sid": []string{"demo"}, "exp": time.Now().Add(24 * time.Hour).Unix(),
	})
	host, admin := browsable(cfg.Listen), browsable(cfg.AdminListen)
	fmt.Fprintf(stdout, `wsgate demo
  page:      http://%[1]s/
  chat:      ws://%[1]s/ws/chat?token=%[2]s
  ai stream: ws://%[1]s/ws/ai/stream/demo?token=%[2]s
  ticket:    curl -X POST http://%[1]s/auth/ticket -H 'Authorization: Bearer %[2]s'   (then ?ticket=...)
  publish:   curl -X POST 'http://%[1]s/demo/ask?session=demo' -d 'what is revenue'
  metrics:   http://%[3]s/metrics
  (dev token for user alice, tenant demo, valid 24h; the demo secret is public: never use it elsewhere)
`, host, tok, admin)
	var site *demo.Site
	defer func() {
		if site != nil {
			site.Close()
		}
	}()
	return runServer(cfg, stderr, func(h *proxy.Handler, hub *bridge.Hub) error {
		site = demo.NewSite(hub, jsclient.Module)
		for _, p := range []string{"GET /{$}", "GET /demo/", "POST /demo/", "GET /wsgate-client.js"} {
			if err := h.Handle(p, site); err != nil {
				return err
			}
		}
		return nil
	})
}

// browsable turns a listen address into one a browser can open.
func browsable(addr string) string {
	if h, p, err := net.SplitHostPort(addr); err == nil && (h == "" || h == "0.0.0.0" || h == "::") {
		return net.JoinHostPort("localhost", p)
	}
	return addr
}
