package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// Issue 12, finding 6: caps and handshake rates were keyed on the user claim
// alone, so globex/alice could lock acme/alice out.
func TestCapsAndRatesAreKeyedByTenantAndUser(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Hold
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.MaxConnectionsPerUser = 2
	})
	as := func(tenant string) *websocket.DialOptions {
		return bearer(wstest.Token(t, "alice", map[string]any{"tenant_id": tenant}))
	}
	g.dial(t, "/ws/echo", as("globex"))
	g.dial(t, "/ws/echo", as("globex"))
	if got := g.status(t, "/ws/echo", as("globex")); got != http.StatusTooManyRequests {
		t.Fatalf("globex/alice's third socket: %d, want 429", got)
	}
	if got := g.status(t, "/ws/echo", as("acme")); got != http.StatusSwitchingProtocols {
		t.Fatalf("acme/alice locked out by globex/alice: %d", got)
	}

	g2 := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.HandshakesPerSecondPerUser = 1 // burst 2
	})
	for i := 0; i < 2; i++ {
		if got := g2.status(t, "/ws/echo", as("globex")); got != 101 {
			t.Fatalf("handshake %d within the burst: %d", i, got)
		}
	}
	if got := g2.status(t, "/ws/echo", as("globex")); got != http.StatusTooManyRequests {
		t.Fatalf("beyond globex/alice's burst: %d, want 429", got)
	}
	if got := g2.status(t, "/ws/echo", as("acme")); got != 101 {
		t.Fatalf("acme/alice shares globex/alice's handshake rate: %d", got)
	}
}

// Issue 12, finding 7: wsgate_closes_total took the code the client chose,
// so 60 client codes made 60 series.
func TestCloseCodeLabelIsBounded(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, withRoutes(echoRoute(up)))
	tok := wstest.Token(t, "alice", nil)
	for code := 4100; code < 4130; code++ {
		c := g.dial(t, "/ws/echo?token="+tok, nil)
		c.Close(websocket.StatusCode(code), "")
	}
	c := g.dial(t, "/ws/echo?token="+tok, nil)
	c.Close(websocket.StatusNormalClosure, "")
	wstest.WaitFor(t, "all sessions ended", func() bool { return g.h.Active() == 0 })
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "wsgate_closes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					codes[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if len(codes) > 3 || codes["other"] != 30 || codes["1000"] != 1 {
		t.Fatalf("close-code series: %v; want 30 in \"other\", 1 in \"1000\"", codes)
	}
}

// Issue 12, finding 3: on a durable publish route, 20 sockets wrote 500 MB
// into Redis in 13 s. A user's publish byte rate now closes the socket with
// 1008, and a message over the history size limit with 1009.
func TestPublishBudgetsOnDurableRoutes(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		route := proxy.Route{Path: "/ws/room/{doc}", Subscribe: []string{"room:{doc}"}, Publish: "room:{doc}",
			History: &proxy.History{MaxMessageBytes: 4 << 10}}
		g := newBridgeGateway(t, redisURL, func(o *gatewayOpts) {
			o.proxy.Routes = []proxy.Route{route}
			o.bridge.Durable = o.proxy.Durable()
			o.proxy.MaxMessageBytes = 16 << 10
			o.proxy.Limits.PublishBytesPerSecond = 8 << 10 // burst 16 KiB
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tok := wstest.Token(t, "alice", nil)

		big := g.dial(t, "/ws/room/d1?token="+tok, nil)
		big.Write(ctx, websocket.MessageText, []byte(strings.Repeat("b", 4<<10+1)))
		if ce := closeOf(t, big, 5*time.Second); ce.Code != websocket.StatusMessageTooBig || ce.Reason != "message too big for history" {
			t.Fatalf("a message over history.max_message_bytes: %d %q", ce.Code, ce.Reason)
		}

		// Two sockets of one user share one budget: 16 KiB of burst, then 8 KiB/s.
		a := g.dial(t, "/ws/room/d2?token="+tok, nil)
		b := g.dial(t, "/ws/room/d3?token="+tok, nil)
		chunk := []byte(strings.Repeat("m", 3<<10))
		var closed websocket.CloseError
		start := time.Now()
		for i := 0; i < 40 && time.Since(start) < 5*time.Second; i++ {
			c := a
			if i%2 == 1 {
				c = b
			}
			if err := c.Write(ctx, websocket.MessageText, chunk); err != nil {
				closed = closeOf(t, c, 5*time.Second)
				break
			}
		}
		if closed.Code == 0 {
			ca, cb := closeOf(t, a, 5*time.Second), closeOf(t, b, 5*time.Second)
			if ca.Code == websocket.StatusPolicyViolation {
				closed = ca
			} else {
				closed = cb
			}
		}
		if closed.Code != websocket.StatusPolicyViolation || closed.Reason != "publish byte rate exceeded" {
			t.Fatalf("over the publish byte rate: %d %q, want 1008", closed.Code, closed.Reason)
		}
		// Another user is unaffected.
		other := g.dial(t, "/ws/room/d4?token="+wstest.Token(t, "bob", nil), nil)
		if err := other.Write(ctx, websocket.MessageText, chunk); err != nil {
			t.Fatal(err)
		}
		if got := readText(t, other); !strings.Contains(got, `"text":"`+string(chunk)+`"`) {
			t.Fatalf("bob's message did not come back in its envelope: %.80s", got)
		}
	})
}

// Issue 12, finding 2: resumes count against the per-user handshake budget.
func TestResumeSpendsAHandshakeToken(t *testing.T) {
	route := proxy.Route{Path: "/ws/d/{session}", Subscribe: []string{"d:{session}"}, History: &proxy.History{}}
	g := newBridgeGateway(t, "", func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{route}
		o.bridge.Durable = o.proxy.Durable()
		o.proxy.Limits.HandshakesPerSecondPerUser = 2 // burst 4
	})
	tok := wstest.Token(t, "alice", nil)
	for i := 0; i < 2; i++ { // two tokens each
		if got := g.status(t, "/ws/d/s1?since=x:1-1&token="+tok, nil); got != 101 {
			t.Fatalf("resume %d: %d", i, got)
		}
	}
	if got := g.status(t, "/ws/d/s1?since=x:1-1&token="+tok, nil); got != http.StatusTooManyRequests {
		t.Fatalf("third resume in the same second: %d, want 429", got)
	}
}
