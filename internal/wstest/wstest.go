// Package wstest has the helpers wsgate's tests share: tokens, a recording
// upstream, a real redis-server on a free port, and a log sink.
package wstest

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/auth"
)

// Secret is the tests' HMAC secret.
const Secret = "wsgate-test-secret-0123456789abcdef0123456789"

// Token mints an HS256 token for user (tenant "t1", 1h) with extra claims
// overriding the defaults.
func Token(t testing.TB, user string, extra map[string]any) string {
	t.Helper()
	c := map[string]any{"sub": user, "tenant_id": "t1", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	tok, err := auth.MintHS256([]byte(Secret), c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Upstream is a recording WebSocket upstream. Each accepted connection runs
// Serve (echo by default) and its request is kept.
type Upstream struct {
	*httptest.Server
	// Serve handles one accepted connection; it must return when ctx ends.
	Serve func(ctx context.Context, c *websocket.Conn, r *http.Request)
	// Subprotocols the upstream accepts.
	Subprotocols []string
	// Reject, when non-zero, answers the handshake with this status.
	Reject int

	mu       sync.Mutex
	requests []*http.Request
	conns    chan *websocket.Conn
}

// NewUpstream starts an echo upstream; the test's cleanup stops it.
func NewUpstream(t testing.TB) *Upstream {
	u := &Upstream{conns: make(chan *websocket.Conn, 64)}
	u.Serve = Echo
	u.Server = httptest.NewServer(http.HandlerFunc(u.handle))
	t.Cleanup(u.Close)
	return u
}

// WSURL is the upstream's ws:// base URL.
func (u *Upstream) WSURL() string { return "ws" + strings.TrimPrefix(u.URL, "http") }

func (u *Upstream) handle(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.requests = append(u.requests, r.Clone(context.Background()))
	reject := u.Reject
	u.mu.Unlock()
	if reject != 0 {
		http.Error(w, "upstream says no", reject)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: u.Subprotocols})
	if err != nil {
		return
	}
	c.SetReadLimit(64 << 20)
	select {
	case u.conns <- c:
	default:
	}
	u.Serve(r.Context(), c, r)
	c.CloseNow()
}

// Requests returns the handshake requests received so far.
func (u *Upstream) Requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.requests...)
}

// LastRequest waits briefly for a handshake and returns the newest.
func (u *Upstream) LastRequest(t testing.TB) *http.Request {
	t.Helper()
	for i := 0; i < 100; i++ {
		if rs := u.Requests(); len(rs) > 0 {
			return rs[len(rs)-1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("upstream saw no handshake")
	return nil
}

// Conn returns the next accepted upstream connection.
func (u *Upstream) Conn(t testing.TB) *websocket.Conn {
	t.Helper()
	select {
	case c := <-u.conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("upstream accepted no connection")
		return nil
	}
}

// Echo sends every message back with its type, until the peer closes; a
// close from the peer is echoed with its code and reason.
func Echo(ctx context.Context, c *websocket.Conn, _ *http.Request) {
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, b); err != nil {
			return
		}
	}
}

// Hold reads (answering pings) until the peer closes, sending nothing.
func Hold(ctx context.Context, c *websocket.Conn, _ *http.Request) {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
	}
}

// LogSink is a zap logger writing JSON lines into a buffer.
type LogSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// String returns everything logged so far.
func (s *LogSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Logger returns a debug-level JSON logger into s.
func (s *LogSink) Logger() *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(s), zapcore.DebugLevel))
}

// WaitFor polls cond until it is true or 5s pass.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run runs f (a component's Run method) until the test ends; the cleanup
// cancels its context and waits for it to return.
func Run(t testing.TB, f func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}
