package proxy_test

import (
	"context"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// An upstream that stops reading is dropped by write_timeout, whether the
// frames are longer than a read (streamed from a goroutine) or small ones
// the event loop relays whole until the upstream's socket is full (the
// rest then waits on a goroutine).
func TestUpstreamThatStopsReadingIsDropped(t *testing.T) {
	for name, size := range map[string]int{"64KiB": 64 << 10, "1000B": 1000} {
		t.Run(name, func(t *testing.T) {
			g := stalledGateway(t, 300*time.Millisecond)
			c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			go func() {
				msg := make([]byte, size)
				for range (128 << 20) / size { // 128 MiB offered; the socket buffers take a few MiB
					if c.Write(context.Background(), websocket.MessageBinary, msg) != nil {
						return
					}
				}
			}()
			ce := closeOf(t, c, 10*time.Second)
			if ce.Code != websocket.StatusInternalError || ce.Reason != "upstream write timeout" {
				t.Errorf("client got %d %q, want 1011 upstream write timeout", ce.Code, ce.Reason)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
				t.Errorf("heap grew %d MiB while the upstream stalled; wsgate must not buffer", grew>>20)
			}
			wstest.WaitFor(t, "closes counted", func() bool {
				return g.metric(t, "wsgate_closes_total", "route", "/ws/echo", "code", "1011", "side", "upstream") == 1
			})
		})
	}
}

// stalledGateway is a gateway whose /ws/echo upstream accepts, then never
// reads, with no message rate or per-user connection limit.
func stalledGateway(t *testing.T, writeTimeout time.Duration) *gateway {
	up := wstest.NewUpstream(t)
	stall(t, up)
	return newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.WriteTimeout = writeTimeout
		o.proxy.Limits.MessagesPerSecond = -1
		o.proxy.Limits.MaxConnectionsPerUser = -1
	})
}

func TestUpstreamKilledMidStreamIsCounted(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
		for i := 0; i < 5; i++ {
			c.Write(ctx, websocket.MessageText, []byte("tok"))
		}
		// The process dies: the TCP connection drops without a close frame.
	}
	g := newGateway(t, withRoutes(echoRoute(up)))
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
	for i := 0; i < 5; i++ {
		if got := readText(t, c); got != "tok" {
			t.Fatalf("message %d = %q", i, got)
		}
	}
	if ce := closeOf(t, c, 5*time.Second); ce.Code != websocket.StatusBadGateway {
		t.Errorf("client got %d, want 1014", ce.Code)
	}
	wstest.WaitFor(t, "closes{code=1014,side=upstream}", func() bool {
		return g.metric(t, "wsgate_closes_total", "route", "/ws/echo", "code", "1014", "side", "upstream") == 1
	})
}

func TestClientThatStopsReadingIsDropped(t *testing.T) {
	up := wstest.NewUpstream(t)
	upEnd := make(chan error, 1)
	up.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
		go func() { _, _, err := c.Read(ctx); upEnd <- err }()
		msg := make([]byte, 64<<10)
		for i := 0; i < 2000; i++ { // 128 MiB offered to a client that reads nothing
			if c.Write(ctx, websocket.MessageBinary, msg) != nil {
				return
			}
		}
	}
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.WriteTimeout = 300 * time.Millisecond
	})
	rawDial(t, g, "/ws/echo", authHeader(t)) // never reads
	select {
	case err := <-upEnd:
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Errorf("upstream got %v, want close 1001", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream leg still open 10s after the client stopped reading")
	}
	wstest.WaitFor(t, "session end", func() bool { return g.h.Active() == 0 })
	if got := g.metric(t, "wsgate_closes_total", "route", "/ws/echo", "code", "1001", "side", "client"); got != 1 {
		t.Errorf("closes{code=1001,side=client} = %v, want 1", got)
	}
}
