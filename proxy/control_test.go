package proxy_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// Route kinds, as the session builds them: passthrough (two raw legs),
// channel-only (a raw client leg), mixed (coder/websocket legs).
func routeKinds(up *wstest.Upstream) []proxy.Route {
	return []proxy.Route{
		{Path: "/ws/echo", Upstream: up.WSURL() + "/echo"},
		{Path: "/ws/notifications", Subscribe: []string{"notifications:{tenant}:{user}"}},
		{Path: "/ws/assist", Upstream: up.WSURL() + "/echo", Subscribe: []string{"assist:{user}"}, Publish: "assist:{user}"},
	}
}

// flood writes n pings of 125 bytes (or pongs) as fast as the socket takes
// them, and returns once written or once wsgate stops taking them.
func flood(conn net.Conn, opcode byte, n int, masked bool) {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, frame{fin: true, opcode: opcode, masked: masked, payload: bytes.Repeat([]byte{byte(i)}, 125)}.encode()...)
	}
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	conn.Write(b) // wsgate may drop the socket before it has all: that is the point
}

// closeWithin reads frames until a close frame and returns its code and
// reason; it fails the test if none comes within d.
func closeWithin(t *testing.T, rc *rawConn, d time.Duration) (uint16, string) {
	t.Helper()
	rc.conn.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := readFrame(rc.br)
		if err != nil {
			t.Fatalf("no close frame within %v: %v", d, err)
		}
		if f.opcode == opClose {
			return parseClose(t, f)
		}
	}
}

// A client that floods pings is closed with 1008 within a second, on every
// route kind, and counted; a bystander on the same route goes on.
func TestControlFrameFloodCloses1008(t *testing.T) {
	for _, opcode := range []byte{opPing, opPong} {
		for _, path := range []string{"/ws/echo", "/ws/notifications", "/ws/assist"} {
			name := path + "/ping"
			if opcode == opPong {
				name = path + "/pong"
			}
			t.Run(name, func(t *testing.T) {
				up := wstest.NewUpstream(t)
				g := newGateway(t, func(o *gatewayOpts) {
					o.proxy.Routes = routeKinds(up)
					o.proxy.Limits.ControlFramesPerSecond = 0 // the default: 10/s, burst 20
				})
				wstest.WaitFor(t, "broker ready", g.hub.Ready)
				bystander := g.dial(t, path, bearer(wstest.Token(t, "bob", nil)))
				rc := rawDial(t, g, path, authHeader(t))

				start := time.Now()
				go flood(rc.conn, opcode, 1000, true)
				code, reason := closeWithin(t, rc, time.Second)
				if code != 1008 || reason != "control frame rate exceeded" {
					t.Fatalf("flooder got close %d %q, want 1008 \"control frame rate exceeded\"", code, reason)
				}
				t.Logf("closed %v after the flood began", time.Since(start).Round(time.Millisecond))
				wstest.WaitFor(t, "the close counted", func() bool {
					return g.metric(t, "wsgate_closes_total", "route", path, "code", "1008", "side", "client") == 1
				})

				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				want := "still here"
				if path == "/ws/notifications" {
					publish(t, g, "notifications:t1:bob", want)
				} else if err := bystander.Write(ctx, websocket.MessageText, []byte(want)); err != nil {
					t.Fatal(err)
				}
				if got := readText(t, bystander); got != want {
					t.Fatalf("bystander got %q, want %q", got, want)
				}
			})
		}
	}
}

// An upstream that floods pings is closed with 1008; its client gets 1014.
func TestUpstreamControlFrameFloodCloses1008(t *testing.T) {
	for name, route := range map[string]proxy.Route{
		"passthrough": {Path: "/ws/raw"},
		"mixed":       {Path: "/ws/raw", Subscribe: []string{"raw:{user}"}},
	} {
		t.Run(name, func(t *testing.T) {
			u := newRawUpstream(t, func(key string) string { return switching(key, "") })
			route.Upstream = "ws://" + u.addr + "/"
			g := newGateway(t, withRoutes(route))
			wstest.WaitFor(t, "broker ready", g.hub.Ready)
			c := g.dial(t, "/ws/raw", bearer(wstest.Token(t, "alice", nil)))
			up := u.conn(t)
			go flood(up.conn, opPing, 1000, false)
			if code, reason := closeWithin(t, up, time.Second); code != 1008 {
				t.Errorf("upstream got close %d %q, want 1008", code, reason)
			}
			ce := closeOf(t, c, 5*time.Second)
			if ce.Code != websocket.StatusBadGateway || ce.Reason != "upstream control frame rate exceeded" {
				t.Errorf("client got %d %q, want 1014 \"upstream control frame rate exceeded\"", ce.Code, ce.Reason)
			}
			wstest.WaitFor(t, "the close counted", func() bool {
				return g.metric(t, "wsgate_closes_total", "route", "/ws/raw", "code", "1014", "side", "upstream") == 1
			})
		})
	}
}

// One close decision per event: an upstream that breaks the protocol gets
// 1002, and the client the same 1014 "upstream protocol error" whether its
// route relays raw frames or reads messages.
func TestUpstreamProtocolErrorIsOneCloseOnEveryRouteKind(t *testing.T) {
	for name, route := range map[string]proxy.Route{
		"passthrough": {Path: "/ws/raw"},
		"mixed":       {Path: "/ws/raw", Subscribe: []string{"raw:{user}"}},
	} {
		t.Run(name, func(t *testing.T) {
			u := newRawUpstream(t, func(key string) string { return switching(key, "") })
			route.Upstream = "ws://" + u.addr + "/"
			g := newGateway(t, withRoutes(route))
			wstest.WaitFor(t, "broker ready", g.hub.Ready)
			c := g.dial(t, "/ws/raw", bearer(wstest.Token(t, "alice", nil)))
			up := u.conn(t)
			up.writeBytes(frame{fin: true, rsv: rsv1, opcode: opText, payload: []byte("no extension was negotiated")}.encode())
			if code, _ := closeWithin(t, up, 5*time.Second); code != 1002 {
				t.Errorf("upstream got close %d, want 1002", code)
			}
			ce := closeOf(t, c, 5*time.Second)
			if ce.Code != websocket.StatusBadGateway || ce.Reason != "upstream protocol error" {
				t.Errorf("client got %d %q, want 1014 \"upstream protocol error\"", ce.Code, ce.Reason)
			}
			wstest.WaitFor(t, "the close counted", func() bool {
				return g.metric(t, "wsgate_closes_total", "route", "/ws/raw", "code", "1014", "side", "upstream") == 1
			})
		})
	}
}

// A peer that pings at the budget's rate (far more often than any
// heartbeat) is answered every time, past the burst.
func TestPingsAtTheRateStayWithinControlBudget(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, withRoutes(routeKinds(up)...))
	for _, path := range []string{"/ws/echo", "/ws/assist"} {
		c := g.dial(t, path, bearer(wstest.Token(t, "alice", nil)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ctx = c.CloseRead(ctx)    // a reader, so that pongs are seen
		for i := 0; i < 30; i++ { // past the burst of 20, at 10/s
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("%s: ping %d: %v", path, i, err)
			}
			time.Sleep(time.Second / proxy.DefaultControlFramesPerSecond)
		}
		cancel()
		c.Close(websocket.StatusNormalClosure, "")
	}
}
