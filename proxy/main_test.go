package proxy_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// gateway is a wsgate Handler on a loopback httptest server.
type gateway struct {
	*httptest.Server
	h    *proxy.Handler
	hub  *bridge.Hub
	reg  *prometheus.Registry
	logs *wstest.LogSink
}

type gatewayOpts struct {
	auth   auth.Config
	proxy  proxy.Config
	bridge bridge.Config
	// serve, if set, configures the Handler before it serves and returns
	// what the test server serves (ticket_test.go mounts /auth/ticket).
	serve func(*proxy.Handler) http.Handler
}

// newGateway starts a gateway. Routes default to /ws/echo → up.
func newGateway(t *testing.T, mutate func(*gatewayOpts)) *gateway {
	t.Helper()
	o := gatewayOpts{
		auth: auth.Config{HMACSecret: []byte(wstest.Secret), Leeway: 0},
		proxy: proxy.Config{HeartbeatInterval: time.Minute, HeartbeatTimeout: 10 * time.Second, ShutdownGrace: time.Second,
			// Tests dial many clients from one address; limits have their own test.
			Limits: proxy.Limits{HandshakesPerSecondPerIP: -1, HandshakesPerSecondPerUser: -1, MessagesPerSecond: -1}},
	}
	if mutate != nil {
		mutate(&o)
	}
	g := &gateway{reg: prometheus.NewRegistry(), logs: &wstest.LogSink{}}
	log := g.logs.Logger()
	v, err := auth.New(o.auth, log, g.reg)
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, v.Run)
	g.hub, err = bridge.New(o.bridge, log, g.reg)
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, g.hub.Run)
	g.h, err = proxy.New(o.proxy, v, g.hub, log, g.reg)
	if err != nil {
		t.Fatal(err)
	}
	var served http.Handler = g.h
	if o.serve != nil {
		served = o.serve(g.h)
	}
	g.Server = httptest.NewServer(served)
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		g.h.Drain(dctx)
		dcancel()
		g.Server.Close() // the verifier and hub stop after this (cleanups run last-in first-out)
		if tok := "eyJ"; strings.Contains(g.logs.String(), tok) {
			t.Errorf("a token reached the logs:\n%s", g.logs.String())
		}
	})
	wstest.WaitFor(t, "verifier ready", v.Ready)
	return g
}

func (g *gateway) wsURL(path string) string { return "ws" + strings.TrimPrefix(g.URL, "http") + path }

// dial connects a client; it fails the test unless the upgrade succeeds.
func (g *gateway) dial(t *testing.T, path string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, g.wsURL(path), opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: status %d: %v\n%s", path, status, err, lastLines(g.logs.String(), 5))
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// status dials and returns the HTTP status of a refused handshake.
func (g *gateway) status(t *testing.T, path string, opts *websocket.DialOptions) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, g.wsURL(path), opts)
	if err == nil {
		c.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial %s: no response: %v", path, err)
	}
	return resp.StatusCode
}

func (g *gateway) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return wstest.Metric(t, g.reg, name, labels...)
}

func bearer(tok string) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}}
}

func echoRoute(up *wstest.Upstream) proxy.Route {
	return proxy.Route{Path: "/ws/echo", Upstream: up.WSURL() + "/echo"}
}

func withRoutes(routes ...proxy.Route) func(*gatewayOpts) {
	return func(o *gatewayOpts) { o.proxy.Routes = routes }
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got message type %v, want text", typ)
	}
	return string(b)
}

// closeOf reads until the connection closes and returns the close error.
func closeOf(t *testing.T, c *websocket.Conn, within time.Duration) websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !asCloseError(err, &ce) {
			t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// silentListener accepts TCP and never answers a handshake; accepted counts
// the connections it holds. The test's cleanup closes everything.
func silentListener(t *testing.T) (addr string, accepted func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return l.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(held)
	}
}

// recordCloses makes up read every message and report the close frame that
// ends each connection (code -1 when it ended without one).
func recordCloses(up *wstest.Upstream) <-chan websocket.CloseError {
	closes := make(chan websocket.CloseError, 4)
	up.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				ce := websocket.CloseError{Code: -1, Reason: err.Error()}
				asCloseError(err, &ce)
				closes <- ce
				return
			}
		}
	}
	return closes
}

// stall makes up accept and then neither read nor write until the test ends.
func stall(t *testing.T, up *wstest.Upstream) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	up.Serve = func(context.Context, *websocket.Conn, *http.Request) { <-stop }
}
