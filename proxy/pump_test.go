package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

func TestPumpPreservesTypeBytesAndOrder(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.MaxMessageBytes = 16 << 20
	})
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
	ctx := context.Background()

	big := make([]byte, 5<<20) // streamed frame by frame, never copied whole
	rand.Read(big)
	binary := []byte{0, 1, 2, 0xff, 0xfe}
	msgs := []struct {
		typ websocket.MessageType
		b   []byte
	}{{websocket.MessageText, []byte("héllo")}, {websocket.MessageBinary, binary}, {websocket.MessageText, []byte("")}, {websocket.MessageBinary, big}}
	for i := 0; i < 500; i++ {
		msgs = append(msgs, struct {
			typ websocket.MessageType
			b   []byte
		}{websocket.MessageText, []byte(fmt.Sprintf("msg-%04d", i))})
	}
	errc := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := c.Write(ctx, m.typ, m.b); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, m := range msgs {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		typ, b, err := c.Read(rctx)
		cancel()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != m.typ || !bytes.Equal(b, m.b) {
			t.Fatalf("message %d: got type %v len %d, want type %v len %d", i, typ, len(b), m.typ, len(m.b))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := g.metric(t, "wsgate_messages_total", "route", "/ws/echo", "direction", "client_to_upstream"); got != float64(len(msgs)) {
		t.Errorf("client_to_upstream messages = %v, want %d", got, len(msgs))
	}
	if got := g.metric(t, "wsgate_connections_active", "route", "/ws/echo"); got != 1 {
		t.Errorf("active connections = %v, want 1", got)
	}
}

func TestOversizedMessageCloses1009BothWays(t *testing.T) {
	for _, sender := range []string{"client", "upstream"} {
		t.Run(sender, func(t *testing.T) {
			up := wstest.NewUpstream(t)
			up.Serve = wstest.Hold
			g := newGateway(t, func(o *gatewayOpts) {
				o.proxy.Routes = []proxy.Route{echoRoute(up)}
				o.proxy.MaxMessageBytes = 1024
			})
			c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
			u := up.Conn(t)
			from, to := c, u
			if sender == "upstream" {
				from, to = u, c
			}
			// An allowed message passes first.
			if err := from.Write(context.Background(), websocket.MessageBinary, make([]byte, 1024)); err != nil {
				t.Fatal(err)
			}
			if sender == "client" {
				// Hold does not read messages into the test; use a reader.
				go func() { from.Write(context.Background(), websocket.MessageBinary, make([]byte, 2048)) }()
				if ce := closeOf(t, from, 5*time.Second); ce.Code != websocket.StatusMessageTooBig {
					t.Errorf("sender got close %d, want 1009", ce.Code)
				}
				return
			}
			from.Write(context.Background(), websocket.MessageBinary, make([]byte, 2048))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			typ, b, err := to.Read(ctx)
			if err != nil || typ != websocket.MessageBinary || len(b) != 1024 {
				t.Fatalf("allowed message: %v %d %v", typ, len(b), err)
			}
			if ce := closeOf(t, to, 5*time.Second); ce.Code != websocket.StatusMessageTooBig {
				t.Errorf("peer got close %d, want 1009", ce.Code)
			}
		})
	}
}

func TestOversizedFromClientClosesUpstreamToo(t *testing.T) {
	up := wstest.NewUpstream(t)
	closes := recordCloses(up)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.MaxMessageBytes = 1024
	})
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
	go c.Write(context.Background(), websocket.MessageText, []byte(strings.Repeat("x", 4096)))
	if ce := closeOf(t, c, 5*time.Second); ce.Code != websocket.StatusMessageTooBig {
		t.Errorf("client got %d, want 1009", ce.Code)
	}
	select {
	case ce := <-closes:
		if ce.Code != websocket.StatusMessageTooBig {
			t.Errorf("upstream got %d, want 1009", ce.Code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream was not closed")
	}
}

func TestCloseCodesPropagate(t *testing.T) {
	type result struct {
		code   websocket.StatusCode
		reason string
	}
	cases := map[string]struct {
		act        func(client, upstream *websocket.Conn)
		wantClient result // what the client receives
		wantUp     result // what the upstream receives
	}{
		"upstream closes with app code": {
			act:        func(_, u *websocket.Conn) { u.Close(4000, "session over") },
			wantClient: result{4000, "session over"},
		},
		"upstream closes normally": {
			act:        func(_, u *websocket.Conn) { u.Close(websocket.StatusNormalClosure, "done") },
			wantClient: result{1000, "done"},
		},
		"upstream vanishes": {
			act:        func(_, u *websocket.Conn) { u.CloseNow() },
			wantClient: result{1014, "upstream went away"},
		},
		"client closes with app code": {
			act:    func(c, _ *websocket.Conn) { c.Close(4002, "tab closed") },
			wantUp: result{4002, "tab closed"},
		},
		"client vanishes": {
			act:    func(c, _ *websocket.Conn) { c.CloseNow() },
			wantUp: result{1001, "client went away"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			up := wstest.NewUpstream(t)
			upClose := make(chan result, 1)
			release := make(chan struct{})
			up.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
				_, _, err := c.Read(ctx)
				var ce websocket.CloseError
				if asCloseError(err, &ce) {
					upClose <- result{ce.Code, ce.Reason}
				} else {
					upClose <- result{-1, err.Error()}
				}
				<-release
			}
			g := newGateway(t, withRoutes(echoRoute(up)))
			c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
			u := up.Conn(t)
			var wg sync.WaitGroup
			if tc.wantClient.code != 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ce := closeOf(t, c, 8*time.Second)
					if ce.Code != tc.wantClient.code || ce.Reason != tc.wantClient.reason {
						t.Errorf("client got %d %q, want %d %q", ce.Code, ce.Reason, tc.wantClient.code, tc.wantClient.reason)
					}
				}()
			}
			tc.act(c, u)
			if tc.wantUp.code != 0 {
				select {
				case got := <-upClose:
					if got != tc.wantUp {
						t.Errorf("upstream got %+v, want %+v", got, tc.wantUp)
					}
				case <-time.After(8 * time.Second):
					t.Error("upstream saw no close")
				}
			}
			wg.Wait()
			close(release)
			wstest.WaitFor(t, "session end", func() bool { return g.h.Active() == 0 })
		})
	}
}

func TestHeartbeatClosesSilentPeers(t *testing.T) {
	t.Run("client stops answering pings", func(t *testing.T) {
		up := wstest.NewUpstream(t)
		upClose := recordCloses(up)
		g := newGateway(t, func(o *gatewayOpts) {
			o.proxy.Routes = []proxy.Route{echoRoute(up)}
			o.proxy.HeartbeatInterval = 200 * time.Millisecond
			o.proxy.HeartbeatTimeout = 100 * time.Millisecond
		})
		// This client never reads, so it never answers a ping.
		g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
		select {
		case ce := <-upClose:
			if ce.Code != websocket.StatusGoingAway || ce.Reason != "client heartbeat timeout" {
				t.Errorf("upstream got %d %q, want 1001 client heartbeat timeout", ce.Code, ce.Reason)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("silent client was not detected")
		}
	})
	t.Run("upstream stops answering pings", func(t *testing.T) {
		up := wstest.NewUpstream(t)
		stall(t, up)
		g := newGateway(t, func(o *gatewayOpts) {
			o.proxy.Routes = []proxy.Route{echoRoute(up)}
			o.proxy.HeartbeatInterval = 200 * time.Millisecond
			o.proxy.HeartbeatTimeout = 100 * time.Millisecond
		})
		c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
		if ce := closeOf(t, c, 5*time.Second); ce.Code != websocket.StatusInternalError || ce.Reason != "upstream heartbeat timeout" {
			t.Errorf("client got %d %q, want 1011 upstream heartbeat timeout", ce.Code, ce.Reason)
		}
	})
	t.Run("answering peers stay connected", func(t *testing.T) {
		up := wstest.NewUpstream(t)
		up.Serve = wstest.Hold
		g := newGateway(t, func(o *gatewayOpts) {
			o.proxy.Routes = []proxy.Route{echoRoute(up)}
			o.proxy.HeartbeatInterval = 100 * time.Millisecond
			o.proxy.HeartbeatTimeout = 80 * time.Millisecond
		})
		c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
		ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
		defer cancel()
		if _, _, err := c.Read(ctx); ctx.Err() == nil {
			t.Fatalf("connection ended while both peers answered pings: %v", err)
		}
	})
}

func TestTokenExpiryCloses4001(t *testing.T) {
	up := wstest.NewUpstream(t)
	upClose := recordCloses(up)
	g := newGateway(t, withRoutes(echoRoute(up)))
	exp := time.Now().Add(1500 * time.Millisecond)
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", map[string]any{"exp": exp.Unix() + 1})))
	ce := closeOf(t, c, 5*time.Second)
	if ce.Code != 4001 || ce.Reason != "token expired" {
		t.Errorf("client got %d %q, want 4001 token expired", ce.Code, ce.Reason)
	}
	if early := time.Until(exp.Truncate(time.Second)); early > 0 {
		t.Errorf("closed %v before exp", early)
	}
	if got := <-upClose; got.Code != 4001 {
		t.Errorf("upstream got %d, want 4001", got.Code)
	}
	wstest.WaitFor(t, "closes{code=4001,side=wsgate} = 1", func() bool {
		return g.metric(t, "wsgate_closes_total", "route", "/ws/echo", "code", "4001", "side", "wsgate") == 1
	})
}

func TestDrainClosesWith1001AndRefusesNew(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Hold
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.ShutdownGrace = 600 * time.Millisecond
	})
	tok := wstest.Token(t, "alice", nil)
	var clients []*websocket.Conn
	for i := 0; i < 4; i++ {
		clients = append(clients, g.dial(t, "/ws/echo", bearer(tok)))
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.h.Drain(ctx)
		close(done)
	}()
	wstest.WaitFor(t, "draining", g.h.Draining)
	if got := g.status(t, "/ws/echo", bearer(tok)); got != http.StatusServiceUnavailable {
		t.Errorf("new upgrade while draining: %d, want 503", got)
	}
	var closedAt []time.Duration
	for _, c := range clients {
		ce := closeOf(t, c, 5*time.Second)
		if ce.Code != websocket.StatusGoingAway {
			t.Errorf("client got %d, want 1001", ce.Code)
		}
		closedAt = append(closedAt, time.Since(start))
	}
	<-done
	if g.h.Active() != 0 {
		t.Errorf("%d connections left after Drain", g.h.Active())
	}
	spread := closedAt[len(closedAt)-1]
	if spread < 300*time.Millisecond {
		t.Errorf("closes were not spread over the grace window: last at %v", spread)
	}
}

func TestConnectionLogLines(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, withRoutes(echoRoute(up)))
	tok := wstest.Token(t, "alice", nil)
	c := g.dial(t, "/ws/echo?token="+tok+"&x=1", &websocket.DialOptions{HTTPHeader: http.Header{"X-Request-Id": {"req-log-1"}}})
	c.Write(context.Background(), websocket.MessageText, []byte("12345"))
	readText(t, c)
	c.Close(websocket.StatusNormalClosure, "bye")
	wstest.WaitFor(t, "close log", func() bool { return strings.Contains(g.logs.String(), "connection_closed") })
	logs := g.logs.String()
	for _, want := range []string{`"msg":"connection_opened"`, `"request_id":"req-log-1"`, `"route":"/ws/echo"`, `"user":"alice"`,
		`"msgs_in":1`, `"msgs_out":1`, `"bytes_in":5`, `"bytes_out":5`, `"client_close_code":1000`, `"closed_by":"client"`, `"duration"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, tok) || strings.Contains(logs, "x=1") {
		t.Error("the token or raw query reached the logs")
	}
}
