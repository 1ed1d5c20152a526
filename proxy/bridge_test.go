package proxy_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// brokers runs a test against the in-process broker and a real redis-server.
func brokers(t *testing.T, test func(t *testing.T, redisURL string, r *wstest.Redis)) {
	t.Run("memory", func(t *testing.T) { test(t, "", nil) })
	t.Run("redis", func(t *testing.T) {
		r := wstest.StartRedis(t)
		test(t, r.URL(), r)
	})
}

var bridgeRoutes = []proxy.Route{
	{Path: "/ws/ai/stream/{session}", Subscribe: []string{"ai:stream:{session}"}, Require: map[string]string{"session": "sid"}},
	{Path: "/ws/notifications", Subscribe: []string{"notifications:{tenant}:{user}"}},
	{Path: "/ws/collaboration/{doc}", Subscribe: []string{"collab:{tenant}:{doc}"}, Publish: "collab:{tenant}:{doc}"},
}

func newBridgeGateway(t *testing.T, redisURL string, mutate func(*gatewayOpts)) *gateway {
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = append([]proxy.Route(nil), bridgeRoutes...)
		o.bridge.URL = redisURL
		o.bridge.ReconnectMin = 20 * time.Millisecond
		o.bridge.ReconnectMax = 200 * time.Millisecond
		if mutate != nil {
			mutate(o)
		}
	})
	wstest.WaitFor(t, "broker ready", g.hub.Ready)
	return g
}

func publish(t *testing.T, g *gateway, channel, payload string) {
	t.Helper()
	if err := g.hub.Publish(context.Background(), channel, []byte(payload)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func TestBridgeFanOutKeepsOrderPerClient(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, r *wstest.Redis) {
		g := newBridgeGateway(t, redisURL, nil)
		tok := wstest.Token(t, "alice", map[string]any{"sid": "s1"})
		const clients, msgs = 40, 200
		var conns []*websocket.Conn
		for i := 0; i < clients; i++ {
			conns = append(conns, g.dial(t, "/ws/ai/stream/s1", bearer(tok)))
		}
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for _, c := range conns {
			wg.Add(1)
			go func(c *websocket.Conn) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for i := 0; i < msgs; i++ {
					_, b, err := c.Read(ctx)
					if err != nil {
						errs <- err
						return
					}
					if want := fmt.Sprintf(`{"type":"token","data":{"index":%d}}`, i); string(b) != want {
						errs <- fmt.Errorf("got %s, want %s", b, want)
						return
					}
				}
			}(c)
		}
		for i := 0; i < msgs; i++ {
			publish(t, g, "ai:stream:s1", fmt.Sprintf(`{"type":"token","data":{"index":%d}}`, i))
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := g.metric(t, "wsgate_bridge_messages_delivered_total"); got != clients*msgs {
			t.Errorf("delivered = %v, want %d", got, clients*msgs)
		}
		// Someone else's session is refused before the upgrade.
		if got := g.status(t, "/ws/ai/stream/s2", bearer(tok)); got != http.StatusForbidden {
			t.Errorf("other session: %d, want 403", got)
		}
	})
}

func TestBridgeSubscribesOncePerChannel(t *testing.T) {
	r := wstest.StartRedis(t)
	g1 := newBridgeGateway(t, r.URL(), nil)
	g2 := newBridgeGateway(t, r.URL(), nil) // a second replica
	tok := wstest.Token(t, "alice", map[string]any{"sid": "s1"})
	numsub := func() string {
		out, err := r.Do("PUBSUB", "NUMSUB", "ai:stream:s1")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	var conns []*websocket.Conn
	for i := 0; i < 10; i++ {
		conns = append(conns, g1.dial(t, "/ws/ai/stream/s1", bearer(tok)))
	}
	if got := numsub(); got != "ai:stream:s1 1" {
		t.Errorf("10 clients on one replica: NUMSUB %q, want 1 subscriber", got)
	}
	c2 := g2.dial(t, "/ws/ai/stream/s1", bearer(tok))
	if got := numsub(); got != "ai:stream:s1 2" {
		t.Errorf("two replicas: NUMSUB %q, want 2", got)
	}
	// Both replicas deliver a message published once.
	if _, err := r.Do("PUBLISH", "ai:stream:s1", "hello"); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, conns[0]); got != "hello" {
		t.Errorf("replica 1 got %q", got)
	}
	if got := readText(t, c2); got != "hello" {
		t.Errorf("replica 2 got %q", got)
	}
	for i, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
		if i < len(conns)-1 {
			if got := numsub(); got != "ai:stream:s1 2" {
				t.Errorf("with %d clients left: NUMSUB %q, want 2", len(conns)-1-i, got)
			}
		}
	}
	wstest.WaitFor(t, "UNSUBSCRIBE after the last client", func() bool { return numsub() == "ai:stream:s1 1" })
	c2.Close(websocket.StatusNormalClosure, "")
	wstest.WaitFor(t, "no subscribers", func() bool { return numsub() == "ai:stream:s1 0" })
}

func TestBridgeTenantAndUserIsolation(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		g := newBridgeGateway(t, redisURL, nil)
		a := g.dial(t, "/ws/notifications", bearer(wstest.Token(t, "alice", map[string]any{"tenant_id": "A"})))
		b := g.dial(t, "/ws/notifications", bearer(wstest.Token(t, "alice", map[string]any{"tenant_id": "B"})))
		bob := g.dial(t, "/ws/notifications", bearer(wstest.Token(t, "bob", map[string]any{"tenant_id": "A"})))

		// Positive case first: the right tenant and user receive.
		publish(t, g, "notifications:A:alice", "for A/alice")
		if got := readText(t, a); got != "for A/alice" {
			t.Fatalf("A/alice got %q", got)
		}
		publish(t, g, "notifications:B:alice", "for B/alice")
		if got := readText(t, b); got != "for B/alice" {
			t.Fatalf("B/alice got %q", got)
		}
		// Then: neither the other tenant's alice nor another user of A saw them.
		for name, c := range map[string]*websocket.Conn{"B/alice": b, "A/bob": bob} {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			_, msg, err := c.Read(ctx)
			cancel()
			if err == nil {
				t.Errorf("%s received a message not meant for it: %q", name, msg)
			}
		}
		// A path parameter cannot smuggle a tenant separator into a channel name.
		tok := wstest.Token(t, "eve", map[string]any{"tenant_id": "A"})
		if got := g.status(t, "/ws/collaboration/B:doc1", bearer(tok)); got != http.StatusBadRequest {
			t.Errorf("doc id with ':': %d, want 400", got)
		}
	})
}

func TestBridgeCollaborationRoom(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		g := newBridgeGateway(t, redisURL, nil)
		other := g
		if redisURL != "" {
			other = newBridgeGateway(t, redisURL, nil) // members on two replicas
		}
		ann := g.dial(t, "/ws/collaboration/doc1", bearer(wstest.Token(t, "ann", nil)))
		ben := other.dial(t, "/ws/collaboration/doc1", bearer(wstest.Token(t, "ben", nil)))
		outsider := g.dial(t, "/ws/collaboration/doc1", bearer(wstest.Token(t, "olga", map[string]any{"tenant_id": "t2"})))
		ctx := context.Background()
		if err := ann.Write(ctx, websocket.MessageText, []byte(`{"op":"insert","pos":3}`)); err != nil {
			t.Fatal(err)
		}
		if got := readText(t, ben); got != `{"op":"insert","pos":3}` {
			t.Errorf("ben got %q", got)
		}
		if got := readText(t, ann); got != `{"op":"insert","pos":3}` {
			t.Errorf("ann's own edit echo: %q", got)
		}
		// Channels carry bytes, not frame types: a payload that is not valid
		// UTF-8 arrives as a binary message, any other as text.
		ben.Write(ctx, websocket.MessageBinary, []byte{0xff, 0x00, 0x01})
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		typ, b, err := ann.Read(rctx)
		if err != nil || typ != websocket.MessageBinary || string(b) != "\xff\x00\x01" {
			t.Errorf("binary edit: %v %v %v", typ, b, err)
		}
		ctx2, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel2()
		if _, msg, err := outsider.Read(ctx2); err == nil {
			t.Errorf("tenant t2 saw tenant t1's room: %q", msg)
		}
	})
}

func TestBridgeSubscribeOnlyRouteRefusesClientMessages(t *testing.T) {
	g := newBridgeGateway(t, "", nil)
	c := g.dial(t, "/ws/notifications", bearer(wstest.Token(t, "alice", nil)))
	c.Write(context.Background(), websocket.MessageText, []byte("hi"))
	if ce := closeOf(t, c, 5*time.Second); ce.Code != 4003 {
		t.Errorf("close %d %q, want 4003", ce.Code, ce.Reason)
	}
}

func TestBridgeSlowConsumerIsDroppedAlone(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		g := newBridgeGateway(t, redisURL, func(o *gatewayOpts) { o.proxy.SubscriberQueue = 64 })
		tok := wstest.Token(t, "alice", map[string]any{"sid": "s1"})
		fast := []*websocket.Conn{g.dial(t, "/ws/ai/stream/s1", bearer(tok)), g.dial(t, "/ws/ai/stream/s1", bearer(tok))}
		slow := g.dial(t, "/ws/ai/stream/s1", bearer(tok))

		// More than the loopback socket buffers hold, so the slow client's
		// queue must overflow; paced so that readers that read keep up.
		const msgs = 2000
		payload := make([]byte, 16<<10)
		var wg sync.WaitGroup
		for _, c := range fast {
			wg.Add(1)
			go func(c *websocket.Conn) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for i := 0; i < msgs; i++ {
					_, b, err := c.Read(ctx)
					if err != nil {
						t.Errorf("fast client lost its stream at %d: %v", i, err)
						return
					}
					if got, _ := strconv.Atoi(string(b[:8])); got != i {
						t.Errorf("fast client: message %d out of order (%d)", i, got)
						return
					}
				}
			}(c)
		}
		for i := 0; i < msgs; i++ {
			copy(payload, fmt.Sprintf("%08d", i))
			if err := g.hub.Publish(context.Background(), "ai:stream:s1", payload); err != nil {
				t.Fatal(err)
			}
			if i%8 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		wg.Wait()
		// The slow client reads late: what was queued, then the 4008 close.
		ce := closeOf(t, slow, 15*time.Second)
		if ce.Code != 4008 || ce.Reason != "slow consumer" {
			t.Errorf("slow client close %d %q, want 4008 slow consumer", ce.Code, ce.Reason)
		}
		if got := g.metric(t, "wsgate_bridge_slow_consumer_closes_total"); got != 1 {
			t.Errorf("slow consumer closes = %v, want 1", got)
		}
	})
}

func TestBridgeSurvivesRedisRestart(t *testing.T) {
	r := wstest.StartRedis(t)
	up := wstest.NewUpstream(t)
	g := newBridgeGateway(t, r.URL(), func(o *gatewayOpts) {
		o.proxy.Routes = append(o.proxy.Routes, echoRoute(up))
	})
	tok := wstest.Token(t, "alice", map[string]any{"sid": "s1"})
	sub := g.dial(t, "/ws/ai/stream/s1", bearer(tok))
	r.Do("PUBLISH", "ai:stream:s1", "before")
	if got := readText(t, sub); got != "before" {
		t.Fatalf("before the crash: %q", got)
	}

	r.Kill()
	wstest.WaitFor(t, "broker down", func() bool { return !g.hub.Ready() })
	// Proxy-only routes keep working while Redis is down.
	echo := g.dial(t, "/ws/echo", bearer(tok))
	echo.Write(context.Background(), websocket.MessageText, []byte("still up"))
	if got := readText(t, echo); got != "still up" {
		t.Errorf("proxy route during the outage: %q", got)
	}
	// Bridge routes refuse new clients with 503.
	if got := g.status(t, "/ws/ai/stream/s1", bearer(tok)); got != http.StatusServiceUnavailable {
		t.Errorf("bridge route during the outage: %d, want 503", got)
	}

	r.Start(t)
	wstest.WaitFor(t, "broker back", g.hub.Ready)
	// The client that stayed connected across the gap is told so.
	if ce := closeOf(t, sub, 10*time.Second); ce.Code != 4009 {
		t.Errorf("client across the gap: close %d %q, want 4009", ce.Code, ce.Reason)
	}
	fresh := g.dial(t, "/ws/ai/stream/s1", bearer(tok))
	wstest.WaitFor(t, "resubscribed", func() bool {
		out, _ := r.Do("PUBSUB", "NUMSUB", "ai:stream:s1")
		return out == "ai:stream:s1 1"
	})
	r.Do("PUBLISH", "ai:stream:s1", "after")
	if got := readText(t, fresh); got != "after" {
		t.Errorf("after the restart: %q", got)
	}
	if got := g.metric(t, "wsgate_bridge_redis_reconnects_total"); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}
	if got := g.metric(t, "wsgate_bridge_redis_disconnected_seconds_total"); got <= 0 {
		t.Errorf("disconnected seconds = %v, want > 0", got)
	}
}

func TestBridgeChannelValuesFromClaimsAndPath(t *testing.T) {
	g := newBridgeGateway(t, "", nil)
	noTenant := bearer(wstest.Token(t, "alice", map[string]any{"tenant_id": nil}))
	if got := g.status(t, "/ws/notifications", noTenant); got != http.StatusForbidden {
		t.Errorf("token without the tenant claim the channel needs: %d, want 403", got)
	}
	colonTenant := bearer(wstest.Token(t, "alice", map[string]any{"tenant_id": "a:b"}))
	if got := g.status(t, "/ws/notifications", colonTenant); got != http.StatusForbidden {
		t.Errorf("tenant claim with a separator: %d, want 403", got)
	}
	if got := g.status(t, "/ws/collaboration/doc*1", bearer(wstest.Token(t, "alice", nil))); got != http.StatusBadRequest {
		t.Errorf("path parameter with a glob character: %d, want 400", got)
	}
}

// A route can combine an upstream with channels: client messages go to the
// upstream and the publish channel, and the client gets both the upstream's
// messages and the channel's.
func TestRouteCombinesUpstreamAndChannels(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		rec := newRecorder(t)
		g := newBridgeGateway(t, redisURL, func(o *gatewayOpts) {
			o.proxy.Routes = append(o.proxy.Routes, proxy.Route{Path: "/ws/assist/{doc}", Upstream: rec.WSURL() + "/echo",
				Subscribe: []string{"collab:{tenant}:{doc}"}, Publish: "collab:{tenant}:{doc}"})
		})
		tok := wstest.Token(t, "alice", nil)                      // tenant t1
		watcher := g.dial(t, "/ws/collaboration/d1", bearer(tok)) // a room member without the upstream
		c := g.dial(t, "/ws/assist/d1", bearer(tok))
		if got := rec.LastRequest(t).Header.Get("X-User-Id"); got != "alice" {
			t.Fatalf("upstream saw X-User-Id %q, want alice", got)
		}
		wstest.WaitFor(t, "both subscribed", func() bool { return wstest.Metric(t, g.reg, "wsgate_bridge_subscriptions") >= 1 })

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Write(ctx, websocket.MessageText, []byte("edit 1")); err != nil {
			t.Fatal(err)
		}
		// The sender gets its message twice: echoed by the upstream and
		// from the room; the other member once, from the room.
		got := map[string]int{}
		for range 2 {
			got[readText(t, c)]++
		}
		if got["edit 1"] != 2 {
			t.Errorf("sender got %v, want \"edit 1\" from the upstream and from the channel", got)
		}
		if m := readText(t, watcher); m != "edit 1" {
			t.Errorf("room member got %q, want \"edit 1\"", m)
		}
		publish(t, g, "collab:t1:d1", "from the service")
		if m := readText(t, c); m != "from the service" {
			t.Errorf("got %q, want the channel message", m)
		}
		if m := rec.message(t); string(m.b) != "edit 1" {
			t.Errorf("upstream read %q, want \"edit 1\"", m.b)
		}
		c.Close(websocket.StatusNormalClosure, "")
		if code := rec.closed(t); code != websocket.StatusNormalClosure {
			t.Errorf("upstream got close %d, want 1000", code)
		}
	})
}

// On a route without an upstream, wsgate selects the client's first
// subprotocol that is not the token carrier: a browser fails a handshake
// that selects none of those it offered.
func TestChannelRouteSelectsClientSubprotocol(t *testing.T) {
	g := newBridgeGateway(t, "", nil)
	tok := wstest.Token(t, "alice", nil)
	carrier := auth.DefaultSubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))
	c := g.dial(t, "/ws/notifications", &websocket.DialOptions{Subprotocols: []string{carrier, "notify.v1", "notify.v0"}})
	if got := c.Subprotocol(); got != "notify.v1" {
		t.Errorf("selected subprotocol %q, want notify.v1", got)
	}
	wstest.WaitFor(t, "subscribed", func() bool { return wstest.Metric(t, g.reg, "wsgate_bridge_subscriptions") == 1 })
	publish(t, g, "notifications:t1:alice", `{"type":"ping"}`)
	if m := readText(t, c); m != `{"type":"ping"}` {
		t.Errorf("got %q", m)
	}
}
