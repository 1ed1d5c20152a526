package proxy_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/limit"
	"github.com/wsgate/wsgate/proxy"
)

func TestConnectionCaps(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Hold
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.MaxConnections = 5
		o.proxy.Limits.MaxConnectionsPerUser = 2
		o.proxy.Limits.MaxConnectionsPerTenant = 3
	})
	tok := func(user, tenant string) *websocket.DialOptions {
		return bearer(wstest.Token(t, user, map[string]any{"tenant_id": tenant}))
	}
	a1 := g.dial(t, "/ws/echo", tok("alice", "A"))
	g.dial(t, "/ws/echo", tok("alice", "A"))
	if got := g.status(t, "/ws/echo", tok("alice", "A")); got != http.StatusTooManyRequests {
		t.Errorf("third connection of one user: %d, want 429", got)
	}
	g.dial(t, "/ws/echo", tok("bob", "A"))
	if got := g.status(t, "/ws/echo", tok("carol", "A")); got != http.StatusTooManyRequests {
		t.Errorf("fourth connection of one tenant: %d, want 429", got)
	}
	g.dial(t, "/ws/echo", tok("dan", "B"))
	g.dial(t, "/ws/echo", tok("erin", "C"))
	if got := g.status(t, "/ws/echo", tok("fay", "D")); got != http.StatusServiceUnavailable {
		t.Errorf("connection over the global cap: %d, want 503", got)
	}
	// Closing frees the slot. (A session registers just after its 101 is
	// written: wait for all five before counting down to four.)
	wstest.WaitFor(t, "five sessions", func() bool { return g.h.Active() == 5 })
	a1.Close(websocket.StatusNormalClosure, "")
	wstest.WaitFor(t, "slot freed", func() bool { return g.h.Active() == 4 })
	g.dial(t, "/ws/echo", tok("fay", "D"))
	// Refused handshakes dialled nothing.
	if n := len(up.Requests()); n != 6 {
		t.Errorf("upstream saw %d handshakes, want 6", n)
	}
	if got := g.metric(t, "wsgate_handshakes_total", "route", "/ws/echo", "result", "rate_limited"); got != 2 {
		t.Errorf("rate_limited handshakes = %v, want 2", got)
	}
}

func TestHandshakeRateLimits(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.HandshakesPerSecondPerIP = 2 // burst 4
		o.proxy.Limits.HandshakesPerSecondPerUser = -1
		o.proxy.Limits.TrustedProxies = []string{"127.0.0.0/8"}
	})
	via := func(ip string) *websocket.DialOptions {
		o := bearer(wstest.Token(t, "alice", nil))
		o.HTTPHeader.Set("X-Forwarded-For", ip)
		return o
	}
	for i := 0; i < 4; i++ {
		if got := g.status(t, "/ws/echo", via("198.51.100.1")); got != 101 {
			t.Fatalf("handshake %d within the burst: %d", i, got)
		}
	}
	if got := g.status(t, "/ws/echo", via("198.51.100.1")); got != http.StatusTooManyRequests {
		t.Errorf("beyond the burst: %d, want 429", got)
	}
	// Another client behind the same trusted gateway has its own budget.
	if got := g.status(t, "/ws/echo", via("198.51.100.2")); got != 101 {
		t.Errorf("another client IP: %d, want 101", got)
	}
	time.Sleep(600 * time.Millisecond) // refills one token at 2/s
	if got := g.status(t, "/ws/echo", via("198.51.100.1")); got != 101 {
		t.Errorf("after refill: %d, want 101", got)
	}
}

func TestHandshakeRateLimitPerUser(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.HandshakesPerSecondPerUser = 1 // burst 2
	})
	for i := 0; i < 2; i++ {
		if got := g.status(t, "/ws/echo", bearer(wstest.Token(t, "mallory", nil))); got != 101 {
			t.Fatalf("handshake %d: %d", i, got)
		}
	}
	if got := g.status(t, "/ws/echo", bearer(wstest.Token(t, "mallory", nil))); got != http.StatusTooManyRequests {
		t.Errorf("third handshake in a second: %d, want 429", got)
	}
	if got := g.status(t, "/ws/echo", bearer(wstest.Token(t, "nina", nil))); got != 101 {
		t.Errorf("another user: %d, want 101", got)
	}
}

func TestMessageRateLimitCloses1008(t *testing.T) {
	up := wstest.NewUpstream(t)
	upClose := recordCloses(up)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.MessagesPerSecond = 10 // burst 20
	})
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
	go func() {
		for i := 0; i < 100; i++ {
			if c.Write(context.Background(), websocket.MessageText, []byte("spam")) != nil {
				return
			}
		}
	}()
	if ce := closeOf(t, c, 5*time.Second); ce.Code != websocket.StatusPolicyViolation || ce.Reason != "message rate limit exceeded" {
		t.Errorf("client got %d %q, want 1008 message rate limit exceeded", ce.Code, ce.Reason)
	}
	if ce := <-upClose; ce.Code != websocket.StatusGoingAway {
		t.Errorf("upstream got %d, want 1001", ce.Code)
	}
}

func TestSharedCapsAcrossReplicas(t *testing.T) {
	r := wstest.StartRedis(t)
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Hold
	replica := func() *gateway {
		g := newGateway(t, func(o *gatewayOpts) {
			o.proxy.Routes = []proxy.Route{echoRoute(up)}
			o.proxy.Limits.MaxConnectionsPerUser = 1
		})
		l, err := limit.New(r.URL(), zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		wstest.Run(t, l.Run)
		wstest.WaitFor(t, "limiter connected", l.Ready)
		g.h.ShareLimits(l)
		return g
	}
	g1, g2 := replica(), replica()
	tok := bearer(wstest.Token(t, "alice", nil))
	c := g1.dial(t, "/ws/echo", tok)
	if got := g2.status(t, "/ws/echo", tok); got != http.StatusTooManyRequests {
		t.Errorf("second connection on another replica: %d, want 429", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	// The fleet-wide key is (tenant, user): t1/alice.
	wstest.WaitFor(t, "slot released fleet-wide", func() bool {
		out, _ := r.Do("ZCARD", "wsgate:conns:{user:2:t1:alice}")
		return out == "0"
	})
	g2.dial(t, "/ws/echo", tok)
}

func TestConcurrentDialCap(t *testing.T) {
	// An upstream that accepts TCP and never answers holds the one dial slot.
	silent, accepted := silentListener(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{{Path: "/ws/silent", Upstream: "ws://" + silent + "/"}}
		o.proxy.DialTimeout = 2 * time.Second
		o.proxy.Limits.MaxConcurrentDials = 1
	})
	tok := bearer(wstest.Token(t, "alice", nil))
	first := make(chan int, 1)
	go func() { first <- g.status(t, "/ws/silent", tok) }()
	wstest.WaitFor(t, "first dial in flight", func() bool { return accepted() == 1 })
	start := time.Now()
	if got := g.status(t, "/ws/silent", tok); got != http.StatusServiceUnavailable {
		t.Errorf("second dial while the slot is taken: %d, want 503", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the refusal took %v; it must not wait for the slot", d)
	}
	if got := <-first; got != http.StatusGatewayTimeout {
		t.Errorf("first dial: %d, want 504", got)
	}
}
