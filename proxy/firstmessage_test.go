package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/closecode"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// recordMessages makes up echo every message and report it, so a test can
// tell exactly what reached the upstream.
func recordMessages(up *wstest.Upstream) <-chan string {
	got := make(chan string, 16)
	up.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			got <- string(b)
			if c.Write(ctx, typ, b) != nil {
				return
			}
		}
	}
	return got
}

func sendText(t *testing.T, c *websocket.Conn, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func authMsg(tok string) string {
	b, _ := json.Marshal(map[string]string{"type": "auth", "token": tok})
	return string(b)
}

func TestFirstMessageAuth(t *testing.T) {
	up := wstest.NewUpstream(t)
	toUp := recordMessages(up)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{
			{Path: "/ws/chat", Upstream: up.WSURL() + "/chat", Auth: proxy.AuthFirstMessage},
			{Path: "/ws/rooms/{room}", Upstream: up.WSURL() + "/rooms/{room}", Subscribe: []string{"room:{room}"}, Auth: proxy.AuthFirstMessage},
		}
	})
	tok := wstest.Token(t, "alice", nil)
	for _, path := range []string{"/ws/chat", "/ws/rooms/7"} {
		t.Run(path, func(t *testing.T) {
			c := g.dial(t, path+"?lang=en", &websocket.DialOptions{Subprotocols: []string{"chat.v1"}})
			before := len(up.Requests())
			sendText(t, c, authMsg(tok))
			if got := readText(t, c); got != `{"type":"wsgate.auth","ok":true,"user":"alice","tenant":"t1"}` {
				t.Fatalf("ack = %s", got)
			}
			reqs := up.Requests()
			if len(reqs) != before+1 {
				t.Fatalf("upstream saw %d handshakes, want 1", len(reqs)-before)
			}
			req := reqs[len(reqs)-1]
			if req.Header.Get("Authorization") != "Bearer "+tok || req.Header.Get("X-User-Id") != "alice" || req.Header.Get("X-Tenant-Id") != "t1" {
				t.Errorf("upstream headers %v", req.Header)
			}
			if req.URL.RawQuery != "lang=en" || req.Header.Get("Sec-WebSocket-Protocol") != "chat.v1" {
				t.Errorf("upstream query %q, subprotocols %q", req.URL.RawQuery, req.Header.Get("Sec-WebSocket-Protocol"))
			}
			if c.Subprotocol() != "chat.v1" {
				t.Errorf("client subprotocol %q", c.Subprotocol())
			}
			sendText(t, c, "hello")
			if got := readText(t, c); got != "hello" {
				t.Fatalf("echo = %q", got)
			}
			if first := <-toUp; first != "hello" {
				t.Errorf("the upstream's first message was %q: the auth message must never reach it", first)
			}
			if path == "/ws/rooms/7" {
				if err := g.hub.Publish(context.Background(), "room:7", []byte("news")); err != nil {
					t.Fatal(err)
				}
				if got := readText(t, c); got != "news" {
					t.Errorf("channel message = %q", got)
				}
			}
			c.Close(websocket.StatusNormalClosure, "")
		})
	}
}

func TestFirstMessageAuthRefusals(t *testing.T) {
	up := wstest.NewUpstream(t)
	toUp := recordMessages(up)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.FirstMessage = proxy.FirstMessage{Timeout: 300 * time.Millisecond}
		o.proxy.AllowedOrigins = []string{"https://app.example.com"}
		o.proxy.Routes = []proxy.Route{
			{Path: "/ws/chat", Upstream: up.WSURL() + "/chat", Auth: proxy.AuthFirstMessage},
			{Path: "/ws/s/{session}", Subscribe: []string{"s:{session}"}, Require: map[string]string{"session": "sid"}, Auth: proxy.AuthFirstMessage},
		}
	})
	expired := wstest.Token(t, "alice", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	cases := map[string]struct {
		path   string
		send   []string
		wait   time.Duration
		code   websocket.StatusCode
		reason string
	}{
		"missing":         {"/ws/chat", nil, 0, closecode.Unauthorized, "auth failed: no auth message in time"},
		"late":            {"/ws/chat", []string{authMsg(wstest.Token(t, "alice", nil))}, 600 * time.Millisecond, closecode.Unauthorized, "auth failed: no auth message in time"},
		"bad token":       {"/ws/chat", []string{authMsg("x.y.z")}, 0, closecode.Unauthorized, "auth failed: malformed token: header is not base64url"},
		"expired token":   {"/ws/chat", []string{authMsg(expired)}, 0, closecode.Unauthorized, "auth failed: token expired"},
		"not an auth msg": {"/ws/chat", []string{"hello"}, 0, closecode.Unauthorized, `auth failed: first message must be {"type":"auth","token":"<JWT>"}`},
		"empty token":     {"/ws/chat", []string{authMsg("")}, 0, closecode.Unauthorized, `auth failed: first message must be {"type":"auth","token":"<JWT>"}`},
		"require refuses": {"/ws/s/other", []string{authMsg(wstest.Token(t, "alice", map[string]any{"sid": "mine"}))}, 0, closecode.AccessDenied, "token does not grant this path: {session} is not in claim sid"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := len(up.Requests())
			c := g.dial(t, tc.path, nil)
			time.Sleep(tc.wait)
			for _, m := range tc.send {
				c.Write(context.Background(), websocket.MessageText, []byte(m)) // may fail once closed
			}
			ce := closeOf(t, c, 5*time.Second)
			if ce.Code != tc.code || ce.Reason != tc.reason {
				t.Errorf("close %d %q, want %d %q", ce.Code, ce.Reason, tc.code, tc.reason)
			}
			if n := len(up.Requests()) - before; n != 0 {
				t.Errorf("the upstream was dialled %d times", n)
			}
		})
	}
	select {
	case m := <-toUp:
		t.Errorf("a message reached the upstream: %q", m)
	default:
	}
	// Origin is checked before the upgrade, as on token routes.
	if got := g.status(t, "/ws/chat", &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example.org"}}}); got != http.StatusForbidden {
		t.Errorf("foreign origin: status %d, want 403", got)
	}
}

func TestFirstMessagePendingCapAndIPRate(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.FirstMessage = proxy.FirstMessage{MaxPending: 1}
		o.proxy.Routes = []proxy.Route{{Path: "/ws/chat", Upstream: up.WSURL() + "/chat", Auth: proxy.AuthFirstMessage}}
	})
	waiting := g.dial(t, "/ws/chat", nil)
	if got := g.status(t, "/ws/chat", nil); got != http.StatusServiceUnavailable {
		t.Errorf("second waiting socket: status %d, want 503", got)
	}
	sendText(t, waiting, authMsg(wstest.Token(t, "alice", nil)))
	readText(t, waiting) // the ack: no longer pending
	c := g.dial(t, "/ws/chat", nil)
	c.CloseNow()

	g2 := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Limits.HandshakesPerSecondPerIP = 1 // a burst of 2
		o.proxy.Routes = []proxy.Route{{Path: "/ws/chat", Upstream: up.WSURL() + "/chat", Auth: proxy.AuthFirstMessage}}
	})
	a := g2.dial(t, "/ws/chat", nil)
	sendText(t, a, authMsg(wstest.Token(t, "alice", nil)))
	readText(t, a) // authenticated without a second per-IP count
	g2.dial(t, "/ws/chat", nil).CloseNow()
	if got := g2.status(t, "/ws/chat", nil); got != http.StatusTooManyRequests {
		t.Errorf("third upgrade from one IP: status %d, want 429", got)
	}
}

// Drain closes sockets still waiting for their auth message with 1001.
func TestFirstMessageWaitingSocketsDrain(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.FirstMessage = proxy.FirstMessage{Timeout: time.Minute}
		o.proxy.Routes = []proxy.Route{{Path: "/ws/chat", Upstream: up.WSURL() + "/chat", Auth: proxy.AuthFirstMessage}}
	})
	c := g.dial(t, "/ws/chat", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.h.Drain(ctx)
	}()
	ce := closeOf(t, c, 5*time.Second)
	<-done
	if ce.Code != websocket.StatusGoingAway || ce.Reason != "server shutting down" {
		t.Errorf("close %d %q, want 1001 server shutting down", ce.Code, ce.Reason)
	}
}
