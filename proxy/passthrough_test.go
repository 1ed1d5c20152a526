package proxy_test

// The passthrough relay against peers written byte by byte: bytes that
// arrive with a handshake, a misbehaving upstream, pings wsgate answers.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// rawUpstream is an upstream that answers each upgrade with respond(key)
// and then hands the connection to serve.
type rawUpstream struct {
	addr  string
	conns chan net.Conn // accepted connections, after the response
}

func newRawUpstream(t *testing.T, respond func(key string) string) *rawUpstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{addr: l.Addr().String(), conns: make(chan net.Conn, 4)}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err != nil {
				c.Close()
				continue
			}
			io.WriteString(c, respond(req.Header.Get("Sec-WebSocket-Key")))
			u.conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range accepted {
			c.Close()
		}
	})
	return u
}

func (u *rawUpstream) conn(t *testing.T) *rawConn {
	t.Helper()
	select {
	case c := <-u.conns:
		return &rawConn{t: t, conn: c, br: bufio.NewReader(c), upstreamSide: true}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream was not dialled")
	}
	return nil
}

func switching(key, extra string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n" + extra
}

// serverFrame is a final unmasked frame, as an upstream sends.
func serverFrame(opcode byte, payload []byte) []byte {
	return frame{fin: true, opcode: opcode, payload: payload}.encode()
}

func rawGatewayTo(t *testing.T, u *rawUpstream) *gateway {
	return newGateway(t, withRoutes(proxy.Route{Path: "/ws/raw", Upstream: "ws://" + u.addr + "/"}))
}

// Frames an upstream sends in the same packet as its 101 reach the client.
func TestUpstreamFramesBehindThe101AreRelayed(t *testing.T) {
	u := newRawUpstream(t, func(key string) string {
		return switching(key, string(serverFrame(opText, []byte("hello")))+string(serverFrame(opBinary, []byte{1, 2, 3})))
	})
	g := rawGatewayTo(t, u)
	c := g.dial(t, "/ws/raw", bearer(wstest.Token(t, "alice", nil)))
	if m := readText(t, c); m != "hello" {
		t.Fatalf("got %q, want hello", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageBinary || !bytes.Equal(b, []byte{1, 2, 3}) {
		t.Fatalf("got %v %v %v, want binary 010203", typ, b, err)
	}
}

// Frames a client sends in the same packet as its upgrade request reach
// the upstream once the upgrade is done.
func TestClientFramesBehindTheRequestAreRelayed(t *testing.T) {
	rec := newRecorder(t)
	g := newGateway(t, withRoutes(echoRoute(rec.Upstream)))
	addr := g.Listener.Addr().String()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := fmt.Sprintf("GET /ws/echo HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
		addr, wstest.Token(t, "alice", nil))
	conn.Write(append([]byte(req), dataFrame(opText, []byte("early")).encode()...))
	if m := rec.message(t); m.typ != websocket.MessageText || string(m.b) != "early" {
		t.Fatalf("upstream read %v %q, want text \"early\"", m.typ, m.b)
	}
}

// An upstream that gets the handshake wrong is refused with 502 before
// the client is upgraded.
func TestUpstreamBadHandshakeIs502(t *testing.T) {
	cases := map[string]func(key string) string{
		"wrong accept": func(string) string { return switching("not the key", "") },
		"no upgrade header": func(key string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
		},
		"unoffered subprotocol": func(key string) string {
			s := switching(key, "")
			return s[:len(s)-2] + "Sec-WebSocket-Protocol: admin\r\n\r\n"
		},
		"unoffered extension": func(key string) string {
			s := switching(key, "")
			return s[:len(s)-2] + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
		},
	}
	for name, respond := range cases {
		t.Run(name, func(t *testing.T) {
			g := rawGatewayTo(t, newRawUpstream(t, respond))
			if got := g.status(t, "/ws/raw", bearer(wstest.Token(t, "alice", nil))); got != http.StatusBadGateway {
				t.Errorf("status %d, want 502", got)
			}
		})
	}
}

// A masked frame from the upstream breaks RFC 6455 §5.1: the upstream gets
// 1002 and the client 1014.
func TestUpstreamMaskedFrameIs1002(t *testing.T) {
	u := newRawUpstream(t, func(key string) string { return switching(key, "") })
	g := rawGatewayTo(t, u)
	c := g.dial(t, "/ws/raw", bearer(wstest.Token(t, "alice", nil)))
	up := u.conn(t)
	up.write(dataFrame(opText, []byte("masked"))) // a client frame, from the server
	f := up.next(5 * time.Second)
	if code, _ := parseClose(t, f); f.opcode != opClose || code != 1002 {
		t.Fatalf("upstream got opcode %#x code %d, want close 1002", f.opcode, code)
	}
	if ce := closeOf(t, c, 5*time.Second); ce.Code != websocket.StatusBadGateway {
		t.Fatalf("client got close %d, want 1014", ce.Code)
	}
}

// wsgate answers an upstream's ping itself; the client never sees it.
func TestUpstreamPingIsAnsweredByWsgate(t *testing.T) {
	u := newRawUpstream(t, func(key string) string { return switching(key, "") })
	g := rawGatewayTo(t, u)
	c := g.dial(t, "/ws/raw", bearer(wstest.Token(t, "alice", nil)))
	up := u.conn(t)
	up.writeBytes(append(serverFrame(opPing, []byte("are you there")), serverFrame(opText, []byte("after the ping"))...))
	f := up.next(5 * time.Second)
	if f.opcode != opPong || !f.masked || string(f.payload) != "are you there" {
		t.Fatalf("upstream got opcode %#x masked %v payload %q, want a masked pong echoing the ping", f.opcode, f.masked, f.payload)
	}
	if m := readText(t, c); m != "after the ping" {
		t.Fatalf("client got %q, want only the data message", m)
	}
}

// A wss:// upstream: the relay reads the TLS leg through net.Conn (no raw
// socket), frames intact both ways, small and large.
func TestTLSUpstream(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := r.Context()
		c.Write(ctx, websocket.MessageText, []byte("hello over tls"))
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			if c.Write(ctx, typ, b) != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{{Path: "/ws/tls", Upstream: "wss://" + srv.Listener.Addr().String() + "/"}}
		o.proxy.UpstreamTLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	})
	c := g.dial(t, "/ws/tls", bearer(wstest.Token(t, "alice", nil)))
	if m := readText(t, c); m != "hello over tls" {
		t.Fatalf("got %q", m)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 50<<10/16) // 50 KiB: streamed
	for _, msg := range [][]byte{[]byte("a"), big, []byte("b")} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		typ, b, err := c.Read(ctx)
		cancel()
		if err != nil || typ != websocket.MessageBinary || !bytes.Equal(b, msg) {
			t.Fatalf("echo of %d bytes: got %d bytes, type %v, err %v", len(msg), len(b), typ, err)
		}
	}
}
