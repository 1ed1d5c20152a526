package proxy_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// Idle passthrough pairs hold no goroutine in wsgate: once quiet for a
// couple of seconds their legs wait in the event loop, and wake to relay
// when a message comes.
func TestIdlePassthroughPairsHoldNoGoroutine(t *testing.T) {
	const pairs = 50
	up, g, tok := echoPairsGateway(t)
	// dialAll opens pairs connections and returns the goroutines they added.
	dialAll := func(url string, accepted int) ([]*websocket.Conn, int) {
		settle()
		before := runtime.NumGoroutine()
		conns := dialEach(t, url, tok, pairs)
		wstest.WaitFor(t, "upstream accepted all", func() bool { return len(up.Requests()) >= accepted })
		time.Sleep(idleLegsPark) // legs park after 1–2 s without bytes
		settle()
		return conns, runtime.NumGoroutine() - before
	}
	_, direct := dialAll(up.WSURL()+"/echo", pairs) // the clients' and the upstream's own goroutines
	proxied, through := dialAll(g.wsURL("/ws/echo"), 2*pairs)
	// The event loop is one goroutine per process; a goroutine per leg
	// would add 2*pairs.
	if extra := through - direct; extra > pairs/2 {
		t.Errorf("%d idle pairs through wsgate added %d goroutines beyond direct connections (%d vs %d); want none per pair",
			pairs, extra, through, direct)
	}
	for round := range 2 { // they still relay, woken from the loop; then idle again
		if round == 1 {
			time.Sleep(idleLegsPark)
		}
		relayEach(t, proxied)
	}
}

// echoPairsGateway is a gateway to an echo upstream with no per-user
// connection cap, the upstream, and a token for its many pairs.
func echoPairsGateway(t *testing.T) (*wstest.Upstream, *gateway, string) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.MaxConnectionsPerUser = -1
	})
	return up, g, wstest.Token(t, "alice", nil)
}

// dialEach opens n connections to url with tok, closed when the test ends.
func dialEach(t *testing.T, url, tok string, n int) []*websocket.Conn {
	t.Helper()
	var conns []*websocket.Conn
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, url, bearer(tok))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		conns = append(conns, c)
	}
	return conns
}

// idleLegsPark is a little over how long a quiet leg the loop cannot relay
// (its peer is a wss:// upstream) keeps its goroutine; legs the loop relays
// are back in it at once.
const idleLegsPark = 2500 * time.Millisecond

func relayEach(t *testing.T, proxied []*websocket.Conn) {
	t.Helper()
	for i, c := range proxied {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		msg := fmt.Sprintf("after idling %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || string(b) != msg {
			t.Fatalf("pair %d: echo %q, %v", i, b, err)
		}
		cancel()
	}
}

// settle lets goroutines that are ending (handshakes) end.
func settle() {
	for range 10 {
		runtime.Gosched()
		time.Sleep(20 * time.Millisecond)
	}
}

// Busy pairs are relayed by the event loops too: a leg that has relayed a
// message goes back to its loop at once, so pairs that just carried traffic
// hold no goroutine either, without the idle wait.
func TestPassthroughPairsGoBackToTheLoopAfterEachMessage(t *testing.T) {
	const pairs = 40
	up, g, tok := echoPairsGateway(t)
	// The goroutines pairs add once each has carried a few messages,
	// counted straight away: well under the 1–2 s a leg the loop cannot
	// relay keeps its goroutine.
	added := func(url string) int {
		settle()
		before := runtime.NumGoroutine()
		conns := dialEach(t, url, tok, pairs)
		for range 3 {
			relayEach(t, conns)
		}
		settle()
		return runtime.NumGoroutine() - before
	}
	direct := added(up.WSURL() + "/echo") // the clients' and the upstream's own
	if extra := added(g.wsURL("/ws/echo")) - direct; extra > pairs/4 {
		t.Errorf("%d pairs that just relayed hold %d goroutines more than direct connections; want none per pair", pairs, extra)
	}
}

// Subscribers hold no goroutine between messages: the hub's dispatch writes
// to a client whose socket takes the frames (a small fan-out), and a drain
// goroutine runs only while a queue has something in it (a large one, and
// any write that cannot finish at once). Counted in wsgate's own stacks.
func TestIdleSubscribersHoldNoGoroutine(t *testing.T) {
	for _, subscribers := range []int{8, 100} {
		t.Run(fmt.Sprint(subscribers), func(t *testing.T) {
			brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
				g := newBridgeGateway(t, redisURL, func(o *gatewayOpts) { o.proxy.Limits.MaxConnectionsPerUser = -1 })
				tok := wstest.Token(t, "alice", map[string]any{"sid": "s1"})
				conns := dialEach(t, g.wsURL("/ws/ai/stream/s1"), tok, subscribers) // subscribed before the upgrade
				for i := range 3 {
					msg := fmt.Sprintf(`{"i":%d}`, i)
					publish(t, g, "ai:stream:s1", msg)
					for n, c := range conns {
						if got := readText(t, c); got != msg {
							t.Fatalf("subscriber %d got %q, want %q", n, got, msg)
						}
					}
				}
				settle()
				// The event loops are a goroutine per CPU, whatever the load.
				if n, stacks := goroutinesIn("github.com/wsgate/wsgate/proxy."); n > runtime.NumCPU()+2 {
					t.Errorf("%d idle subscribers leave %d goroutines in wsgate's proxy package; want none per subscriber:\n%s",
						subscribers, n, stacks)
				}
			})
		})
	}
}

// goroutinesIn counts the goroutines with a frame in pkg (the event loops
// among them), and returns their stacks.
func goroutinesIn(pkg string) (int, string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n, out := 0, ""
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, pkg) {
			n++
			out += g + "\n\n"
		}
	}
	return n, out
}

// A write the upstream does not take at once waits in the event loop for
// write readiness, not on a goroutine: pairs whose upstream stopped reading
// hold no goroutine in wsgate until write_timeout drops them (1011).
func TestWritesToAStalledUpstreamWaitWithoutAGoroutine(t *testing.T) {
	const pairs = 20
	g := stalledGateway(t, 3*time.Second)
	conns := dialEach(t, g.wsURL("/ws/echo"), wstest.Token(t, "alice", nil), pairs)
	start := time.Now()
	for _, c := range conns {
		go func() {
			msg := make([]byte, 1000)
			for range 64 << 10 { // 64 MB offered; the sockets take a few MB
				if c.Write(context.Background(), websocket.MessageBinary, msg) != nil {
					return
				}
			}
		}()
	}
	time.Sleep(time.Second) // the upstreams' sockets fill
	settle()
	if n, stacks := goroutinesIn("github.com/wsgate/wsgate/proxy."); n > runtime.NumCPU()+2 {
		t.Errorf("%d pairs writing to stalled upstreams hold %d goroutines in wsgate's proxy package; want none per pair:\n%s",
			pairs, n, stacks)
	}
	for i, c := range conns {
		ce := closeOf(t, c, 10*time.Second)
		if ce.Code != websocket.StatusInternalError || ce.Reason != "upstream write timeout" {
			t.Errorf("pair %d: client got %d %q, want 1011 upstream write timeout", i, ce.Code, ce.Reason)
		}
	}
	if took := time.Since(start); took < 3*time.Second/2 || took > 8*time.Second {
		t.Errorf("stalled pairs dropped after %v; want between write_timeout/2 and write_timeout plus slack", took)
	}
}

// A write that waited in the loop goes on once the upstream reads again:
// an upstream that pauses longer than its socket buffers last still gets
// every message, in order, and echoes them back.
func TestWritesWaitingInTheLoopResumeInOrder(t *testing.T) {
	const msgs, size = 8000, 1000 // 8 MB: more than the sockets on the way buffer
	up := wstest.NewUpstream(t)
	up.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
		time.Sleep(700 * time.Millisecond) // the client's writes back up into wsgate
		for {
			typ, b, err := c.Read(ctx)
			if err != nil || c.Write(ctx, typ, b) != nil {
				return
			}
		}
	}
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.WriteTimeout = 10 * time.Second
		o.proxy.Limits.MessagesPerSecond = -1
	})
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
	c.SetReadLimit(1 << 20)
	werr := make(chan error, 1)
	go func() {
		msg := make([]byte, size)
		for i := range msgs {
			binary.BigEndian.PutUint32(msg, uint32(i))
			if err := c.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range msgs {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if len(b) != size || binary.BigEndian.Uint32(b) != uint32(i) {
			t.Fatalf("echo %d: %d bytes, sequence %d", i, len(b), binary.BigEndian.Uint32(b))
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// With a wss:// upstream the loop cannot relay (TLS is written by a
// goroutine), but a quiet client leg is still parked in it after 1–2 s:
// idle pairs hold one goroutine each, the upstream leg's TLS read, not two.
func TestIdleWSSPairsParkTheClientLeg(t *testing.T) {
	const pairs = 20
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil || c.Write(r.Context(), typ, b) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{{Path: "/ws/tls", Upstream: "wss://" + srv.Listener.Addr().String() + "/"}}
		o.proxy.UpstreamTLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
		o.proxy.Limits.MaxConnectionsPerUser = -1
	})
	conns := dialEach(t, g.wsURL("/ws/tls"), wstest.Token(t, "alice", nil), pairs)
	relayEach(t, conns)
	time.Sleep(idleLegsPark)
	settle()
	n, stacks := goroutinesIn("github.com/wsgate/wsgate/proxy.")
	t.Logf("%d idle pairs to a wss:// upstream: %d goroutines in wsgate's proxy package", pairs, n)
	if n > pairs+runtime.NumCPU()+2 {
		t.Errorf("%d idle pairs to a wss:// upstream hold %d goroutines in wsgate's proxy package; want one per pair (the TLS leg):\n%s",
			pairs, n, stacks)
	}
	relayEach(t, conns) // the parked client legs wake and relay
}

// A session whose write to the upstream waits in the loop still ends long
// before write_timeout (30s here) when something else ends it: the
// upstream dropping its connection (1014; the kernel reports the broken
// socket to the wait), or the token expiring (4001; wsgate closes the
// upstream leg after its close handshake times out, and closing it hands
// the waiting write to a goroutine, which fails it).
func TestSessionsWithAWriteWaitingInTheLoopEndOnTime(t *testing.T) {
	for _, tc := range []struct {
		name    string
		exp     time.Duration // token lifetime; 0: an hour
		drop    bool          // the upstream drops its connection after a second
		code    websocket.StatusCode
		endedBy time.Duration // from the start: the session is over (both legs closed)
	}{
		{name: "upstream drops", drop: true, code: websocket.StatusBadGateway, endedBy: 6 * time.Second},
		{name: "token expires", exp: 2 * time.Second, code: 4001, endedBy: 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone := make(chan struct{})
			t.Cleanup(func() {
				select {
				case <-gone:
				default:
					close(gone)
				}
			})
			up := wstest.NewUpstream(t)
			up.Serve = func(context.Context, *websocket.Conn, *http.Request) { <-gone } // never reads; returning drops the connection
			g := newGateway(t, func(o *gatewayOpts) {
				o.proxy.Routes = []proxy.Route{echoRoute(up)}
				o.proxy.WriteTimeout = 30 * time.Second
				o.proxy.Limits.MessagesPerSecond = -1
			})
			start := time.Now()
			claims := map[string]any{}
			if tc.exp > 0 {
				claims["exp"] = start.Add(tc.exp).Unix() + 1
			}
			c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", claims)))
			go func() {
				msg := make([]byte, 1000)
				for range 64 << 10 {
					if c.Write(context.Background(), websocket.MessageBinary, msg) != nil {
						return
					}
				}
			}()
			if tc.drop {
				time.Sleep(time.Second) // the upstream's socket fills; the write waits in the loop
				close(gone)
			}
			if ce := closeOf(t, c, 10*time.Second); ce.Code != tc.code {
				t.Errorf("client got %d %q, want %d", ce.Code, ce.Reason, tc.code)
			}
			for g.h.Active() != 0 {
				if time.Since(start) > tc.endedBy {
					t.Fatalf("session still open %v after it began; want it over by %v, well under write_timeout", time.Since(start), tc.endedBy)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// The hub's dispatch writes to an idle subscriber itself even when the
// client's last write deadline has long passed (write_timeout since the
// last delivery): a direct write arms its own deadline rather than failing
// on the stale one and falling back to a goroutine per subscriber.
func TestDirectDeliveryAfterAnIdleSpellStartsNoGoroutine(t *testing.T) {
	const subscribers = 8
	g := newBridgeGateway(t, "", func(o *gatewayOpts) {
		o.proxy.WriteTimeout = 300 * time.Millisecond
		o.proxy.Limits.MaxConnectionsPerUser = -1
	})
	tok := wstest.Token(t, "alice", map[string]any{"sid": "s1"})
	conns := dialEach(t, g.wsURL("/ws/ai/stream/s1"), tok, subscribers)
	for _, c := range conns {
		c.SetReadLimit(1 << 20)
	}
	readAll := func(want string) {
		t.Helper()
		for n, c := range conns {
			if got := readText(t, c); got != want {
				t.Fatalf("subscriber %d got %d bytes, want %d", n, len(got), len(want))
			}
		}
	}
	// Longer than the 32 KiB a direct write encodes: a drain goroutine
	// writes it, arming each client's write deadline.
	big := strings.Repeat("x", 40<<10)
	publish(t, g, "ai:stream:s1", big)
	readAll(big)
	time.Sleep(time.Second) // the deadlines pass
	settle()
	before := goroutinesCreated()
	for i := range 5 {
		msg := fmt.Sprintf(`{"i":%d}`, i)
		publish(t, g, "ai:stream:s1", msg)
		readAll(msg)
	}
	if n := goroutinesCreated() - before; n >= subscribers {
		t.Errorf("5 small messages to %d idle subscribers started %d goroutines; want the hub's dispatch to write them itself", subscribers, n)
	}
}

// goroutinesCreated is how many goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
