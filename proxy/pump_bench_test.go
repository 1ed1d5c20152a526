package proxy_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// benchGateway is a Handler with one echo route on a loopback server, built
// for testing.B (newGateway takes a *testing.T).
func benchGateway(b *testing.B, up *wstest.Upstream, mutate ...func(*proxy.Config)) string {
	url, _ := benchHandler(b, []proxy.Route{echoRoute(up)}, nil, mutate...)
	return url
}

// benchHandler serves routes (hub may be nil) on a loopback server.
func benchHandler(b *testing.B, routes []proxy.Route, hub *bridge.Hub, mutate ...func(*proxy.Config)) (string, *proxy.Handler) {
	b.Helper()
	log := zap.NewNop() // wsgate serve runs at warn: no per-connection lines
	reg := prometheus.NewRegistry()
	v, err := auth.New(auth.Config{HMACSecret: []byte(wstest.Secret)}, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	cfg := proxy.Config{
		Routes:            routes,
		HeartbeatInterval: time.Minute, HeartbeatTimeout: 10 * time.Second, ShutdownGrace: time.Second,
		Limits: proxy.Limits{MessagesPerSecond: 1e9}, // on, as in production, but never reached
	}
	for _, m := range mutate {
		m(&cfg)
	}
	h, err := proxy.New(cfg, v, hub, log, reg)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.Drain(ctx)
		cancel()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http"), h
}

func benchDial(b *testing.B, url, tok string) *websocket.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	b.Cleanup(func() { c.Close(websocket.StatusNormalClosure, "") })
	return c
}

// roundTrip writes msg and reads its echo into nothing but the library's own
// allocation.
func roundTrip(b *testing.B, c *websocket.Conn, msg []byte) {
	ctx := context.Background()
	if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
		b.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || len(got) != len(msg) {
		b.Fatalf("echo: %d bytes, %v", len(got), err)
	}
}

// mallocsPer counts heap allocations per call of f over n calls.
func mallocsPer(n int, f func()) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

// BenchmarkPumpRoundTrip is one message through wsgate to an echo upstream
// and back: two proxied messages per op. Client, gateway and upstream share
// the process, so allocs/op counts all three; proxy-allocs/msg subtracts a
// direct client↔upstream round trip measured in the same run and halves
// the rest, leaving what the proxy allocates per proxied message.
func BenchmarkPumpRoundTrip(b *testing.B) {
	up := wstest.NewUpstream(b)
	gw := benchGateway(b, up)
	tok := wstest.Token(b, "alice", nil)
	for _, size := range []struct {
		name string
		n    int
	}{{"64B", 64}, {"4KiB", 4 << 10}} {
		msg := make([]byte, size.n)
		b.Run("direct/"+size.name, func(b *testing.B) {
			c := benchDial(b, up.WSURL()+"/echo", tok)
			b.SetBytes(int64(2 * size.n))
			b.ReportAllocs()
			for b.Loop() {
				roundTrip(b, c, msg)
			}
		})
		b.Run("proxied/"+size.name, func(b *testing.B) {
			direct := benchDial(b, up.WSURL()+"/echo", tok)
			c := benchDial(b, gw+"/ws/echo", tok)
			for range 200 { // warm the buffer pool and both conns
				roundTrip(b, c, msg)
				roundTrip(b, direct, msg)
			}
			base := mallocsPer(2000, func() { roundTrip(b, direct, msg) })
			prox := mallocsPer(2000, func() { roundTrip(b, c, msg) })
			b.SetBytes(int64(2 * size.n))
			b.ReportAllocs()
			for b.Loop() {
				roundTrip(b, c, msg)
			}
			b.ReportMetric((prox-base)/2, "proxy-allocs/msg")
		})
	}
}

// BenchmarkChannelDelivery is one channel message (100 B) published through
// the in-process broker and delivered to 8 subscribed clients. allocs/op
// counts the broker, wsgate and the 8 clients' reads; B/op the same.
func BenchmarkChannelDelivery(b *testing.B) {
	hub, err := bridge.New(bridge.Config{}, zap.NewNop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	wstest.Run(b, hub.Run)
	url, h := benchHandler(b, []proxy.Route{{Path: "/ws/feed", Subscribe: []string{"feed"}}}, hub)
	tok := wstest.Token(b, "alice", nil)
	const subs = 8
	var conns []*websocket.Conn
	for range subs {
		conns = append(conns, benchDial(b, url+"/ws/feed", tok))
	}
	wstest.WaitFor(b, "subscribed", func() bool { return h.Active() == subs })
	msg := []byte(strings.Repeat("x", 100))
	ctx := context.Background()
	deliver := func() {
		if err := hub.Publish(ctx, "feed", msg); err != nil {
			b.Fatal(err)
		}
		for _, c := range conns {
			if _, got, err := c.Read(ctx); err != nil || len(got) != len(msg) {
				b.Fatalf("read: %d bytes, %v", len(got), err)
			}
		}
	}
	for range 200 {
		deliver()
	}
	b.SetBytes(int64(subs * len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		deliver()
	}
}
