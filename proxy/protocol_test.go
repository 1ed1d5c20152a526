package proxy_test

// Protocol robustness: hand-built frames over a raw TCP connection, for what
// a conforming client library would never send (RFC 6455 §5).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// upMsg is one message as the upstream's coder/websocket reader returned it.
type upMsg struct {
	typ websocket.MessageType
	b   []byte
}

// recorder is an echo upstream that also reports each message it read and
// the error that ended its read loop.
type recorder struct {
	*wstest.Upstream
	msgs chan upMsg
	end  chan error
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{Upstream: wstest.NewUpstream(t), msgs: make(chan upMsg, 64), end: make(chan error, 8)}
	rec.Serve = func(ctx context.Context, c *websocket.Conn, _ *http.Request) {
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				rec.end <- err
				return
			}
			select {
			case rec.msgs <- upMsg{typ, b}:
			case <-ctx.Done():
				return
			}
			if err := c.Write(ctx, typ, b); err != nil {
				return
			}
		}
	}
	return rec
}

// message waits for the next message the upstream read.
func (rec *recorder) message(t *testing.T) upMsg {
	t.Helper()
	select {
	case m := <-rec.msgs:
		return m
	case err := <-rec.end:
		t.Fatalf("upstream connection ended instead of a message: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("upstream read no message")
	}
	return upMsg{}
}

// closed waits for the upstream leg to end and returns its close code, after
// checking that no data message reached the upstream first.
func (rec *recorder) closed(t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case m := <-rec.msgs:
		t.Fatalf("upstream read a message (type %v, %q) it should never have seen", m.typ, m.b)
	case err := <-rec.end:
		return websocket.CloseStatus(err)
	case <-time.After(10 * time.Second):
		t.Fatal("upstream leg was not closed")
	}
	return 0
}

func newRawGateway(t *testing.T) (*gateway, *recorder) {
	rec := newRecorder(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(rec.Upstream)}
		o.proxy.MaxMessageBytes = 1 << 20
	})
	return g, rec
}

func authHeader(t *testing.T) http.Header {
	return http.Header{"Authorization": {"Bearer " + wstest.Token(t, "alice", nil)}}
}

func TestProtocolViolationsClose1002(t *testing.T) {
	long := bytes.Repeat([]byte("p"), 126)
	cases := map[string][]frame{
		"ping payload 126 bytes":  {{fin: true, opcode: opPing, masked: true, payload: long}},
		"close payload 126 bytes": {{fin: true, opcode: opClose, masked: true, payload: append(closePayload(1000, ""), long[:124]...)}},
		"fragmented ping":         {{fin: false, opcode: opPing, masked: true, payload: []byte("x")}},
		"fragmented close":        {{fin: false, opcode: opClose, masked: true, payload: closePayload(1000, "")}},
		"rsv1 text (no deflate)":  {{fin: true, rsv: rsv1, opcode: opText, masked: true, payload: []byte("hi")}},
		"rsv2 text":               {{fin: true, rsv: rsv2, opcode: opText, masked: true, payload: []byte("hi")}},
		"rsv3 binary":             {{fin: true, rsv: rsv3, opcode: opBinary, masked: true, payload: []byte("hi")}},
		"rsv1 ping":               {{fin: true, rsv: rsv1, opcode: opPing, masked: true, payload: []byte("hi")}},
		"rsv bits on continuation": {
			{fin: false, opcode: opText, masked: true, payload: []byte("a")},
			{fin: true, rsv: rsv2, opcode: opContinuation, masked: true, payload: []byte("b")},
		},
		"unmasked text":                   {{fin: true, opcode: opText, masked: false, payload: []byte("hi")}},
		"unmasked ping":                   {{fin: true, opcode: opPing, masked: false, payload: []byte("hi")}},
		"reserved data opcode 0x3":        {{fin: true, opcode: 0x3, masked: true, payload: []byte("hi")}},
		"reserved control opcode 0xb":     {{fin: true, opcode: 0xb, masked: true}},
		"continuation without a message":  {{fin: true, opcode: opContinuation, masked: true, payload: []byte("hi")}},
		"new message inside a fragmented": {{fin: false, opcode: opText, masked: true, payload: []byte("a")}, dataFrame(opText, []byte("b"))},
		"close payload of 1 byte":         {{fin: true, opcode: opClose, masked: true, payload: []byte{0x03}}},
		"close code 1005 on the wire":     {dataFrame(opClose, closePayload(1005, ""))},
		"close code 1006 on the wire":     {dataFrame(opClose, closePayload(1006, ""))},
		"close code 999":                  {dataFrame(opClose, closePayload(999, ""))},
		"close code 5000":                 {dataFrame(opClose, closePayload(5000, ""))},
	}
	for name, frames := range cases {
		t.Run(name, func(t *testing.T) {
			g, rec := newRawGateway(t)
			rc := rawDial(t, g, "/ws/echo", authHeader(t))
			rec.LastRequest(t)
			rc.write(frames...)
			code, reason := rc.expectClose(10 * time.Second)
			if upCode := rec.closed(t); upCode != websocket.StatusGoingAway {
				t.Errorf("upstream got close %d, want 1001 (client went away)", upCode)
			}
			if code != 1002 {
				t.Errorf("client got close %d %q, want 1002 (protocol error)", code, reason)
			}
		})
	}
}

func TestFragmentedMessagesReachUpstreamWhole(t *testing.T) {
	big := make([]byte, 3*40<<10) // over copyMessage's 32 KiB buffer: streamed to the upstream
	rand.Read(big)
	third := len(big) / 3
	cases := map[string]struct {
		frames []frame
		want   upMsg
		pong   []byte // a ping among the fragments must be answered with this
	}{
		"text, 3 continuations, a rune split across frames": {
			frames: []frame{
				{opcode: opText, masked: true, payload: []byte("frag")},
				{opcode: opContinuation, masked: true, payload: []byte("ment\xc3")},
				{opcode: opContinuation, masked: true, payload: []byte("\xa9d ")},
				{fin: true, opcode: opContinuation, masked: true, payload: []byte("text")},
			},
			want: upMsg{websocket.MessageText, []byte("fragmentéd text")},
		},
		"binary, 3 continuations, one empty": {
			frames: []frame{
				{opcode: opBinary, masked: true, payload: []byte{0, 1}},
				{opcode: opContinuation, masked: true, payload: []byte{}},
				{opcode: opContinuation, masked: true, payload: []byte{0xff, 0xfe}},
				{fin: true, opcode: opContinuation, masked: true, payload: []byte{0x80}},
			},
			want: upMsg{websocket.MessageBinary, []byte{0, 1, 0xff, 0xfe, 0x80}},
		},
		"binary 120 KiB, 3 continuations, streamed": {
			frames: []frame{
				{opcode: opBinary, masked: true, payload: big[:1]},
				{opcode: opContinuation, masked: true, payload: big[1:third]},
				{opcode: opContinuation, masked: true, payload: big[third : 2*third]},
				{fin: true, opcode: opContinuation, masked: true, payload: big[2*third:]},
			},
			want: upMsg{websocket.MessageBinary, big},
		},
		"ping between fragments": {
			frames: []frame{
				{opcode: opText, masked: true, payload: []byte("be")},
				{fin: true, opcode: opPing, masked: true, payload: []byte("mid-message")},
				{opcode: opContinuation, masked: true, payload: []byte("fore ")},
				{opcode: opContinuation, masked: true, payload: []byte("and ")},
				{fin: true, opcode: opContinuation, masked: true, payload: []byte("after")},
			},
			want: upMsg{websocket.MessageText, []byte("before and after")},
			pong: []byte("mid-message"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g, rec := newRawGateway(t)
			rc := rawDial(t, g, "/ws/echo", authHeader(t))
			rc.write(tc.frames...)
			if tc.pong != nil {
				f := rc.next(5 * time.Second)
				if f.opcode != opPong || !bytes.Equal(f.payload, tc.pong) {
					t.Fatalf("got frame opcode %#x payload %q, want pong %q", f.opcode, f.payload, tc.pong)
				}
			}
			got := rec.message(t)
			if got.typ != tc.want.typ || !bytes.Equal(got.b, tc.want.b) {
				t.Fatalf("upstream read type %v, %d bytes; want type %v, %d bytes (equal=%v)",
					got.typ, len(got.b), tc.want.typ, len(tc.want.b), bytes.Equal(got.b, tc.want.b))
			}
			// The echo comes back whole, too.
			op, b := rc.readMessage(5 * time.Second)
			if websocket.MessageType(op) != tc.want.typ || !bytes.Equal(b, tc.want.b) {
				t.Fatalf("echo: opcode %#x, %d bytes; want %v, %d bytes", op, len(b), tc.want.typ, len(tc.want.b))
			}
			select {
			case m := <-rec.msgs:
				t.Fatalf("upstream read a second message (%d bytes): the fragments were split", len(m.b))
			default:
			}
			rc.write(dataFrame(opClose, closePayload(1000, "bye")))
			if code, _ := rc.expectClose(5 * time.Second); code != 1000 {
				t.Errorf("close reply %d, want 1000", code)
			}
		})
	}
}

// wsgate does not validate UTF-8 in text messages: coder/websocket does not
// check it, and wsgate copies messages byte for byte. The endpoints (browsers
// and the upstream's own library) are the ones that validate. This test pins
// that policy in both directions.
func TestInvalidUTF8TextPassesThroughByteForByte(t *testing.T) {
	g, rec := newRawGateway(t)
	rc := rawDial(t, g, "/ws/echo", authHeader(t))
	bad := [][]byte{
		{0xff, 0xfe},                         // never valid
		{'a', 0xc3, 0x28, 'b'},               // bad continuation byte
		{0xed, 0xa0, 0x80},                   // UTF-16 surrogate half
		{0xf4, 0x90, 0x80, 0x80},             // above U+10FFFF
		{0xc0, 0xaf},                         // overlong '/'
		[]byte("ok then truncated \xe2\x82"), // a rune cut short at the end
	}
	for _, p := range bad {
		rc.write(dataFrame(opText, p))
		got := rec.message(t)
		if got.typ != websocket.MessageText || !bytes.Equal(got.b, p) {
			t.Fatalf("upstream read %v %x, want text %x", got.typ, got.b, p)
		}
		op, echo := rc.readMessage(5 * time.Second)
		if op != opText || !bytes.Equal(echo, p) {
			t.Fatalf("client read opcode %#x %x, want text %x", op, echo, p)
		}
	}
	// Still open, and no close frame was queued behind the echoes.
	rc.write(dataFrame(opText, []byte("still here")))
	if op, b := rc.readMessage(5 * time.Second); op != opText || string(b) != "still here" {
		t.Fatalf("after invalid UTF-8: opcode %#x %q", op, b)
	}
}

// Unsolicited pongs are legal (RFC 6455 §5.5.3) and, with the control-frame
// budget off, cost wsgate nothing: no close, no memory kept per pong, no
// reply, nothing forwarded. (With the budget on, a flood is closed with
// 1008: TestControlFrameFloodCloses1008.)
func TestPongFloodIsHarmless(t *testing.T) {
	const pongs = 10000
	rec := newRecorder(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(rec.Upstream)}
		o.proxy.MaxMessageBytes = 1 << 20
		o.proxy.Limits.ControlFramesPerSecond = -1
	})
	rc := rawDial(t, g, "/ws/echo", authHeader(t))
	rc.write(dataFrame(opText, []byte("warm up")))
	rec.message(t)
	rc.readMessage(5 * time.Second)

	before := heapInUse()
	goroutinesBefore := runtime.NumGoroutine()
	var flood []byte
	for i := 0; i < pongs; i++ {
		p := bytes.Repeat([]byte{byte(i)}, 125) // largest legal control payload, each distinct
		flood = append(flood, frame{fin: true, opcode: opPong, masked: true, payload: p}.encode()...)
	}
	rc.writeBytes(flood)
	rc.write(dataFrame(opText, []byte("after the flood")))

	// The very next frame must be the echo: no pong was answered, and the
	// connection was not closed.
	f := rc.next(10 * time.Second)
	if f.opcode != opText || string(f.payload) != "after the flood" {
		t.Fatalf("after %d pongs: got opcode %#x %q, want the echo", pongs, f.opcode, f.payload)
	}
	if m := rec.message(t); string(m.b) != "after the flood" {
		t.Fatalf("upstream read %q", m.b)
	}
	select {
	case m := <-rec.msgs:
		t.Fatalf("a pong reached the upstream as a message: %q", m.b)
	default:
	}
	after := heapInUse()
	// 10,000 pongs of 125 bytes are 1.2 MiB of payload: keeping any of it per
	// pong would show here.
	if grew := int64(after) - int64(before); grew > 512<<10 {
		t.Errorf("heap grew by %d KiB across %d pongs (before %d KiB, after %d KiB)", grew>>10, pongs, before>>10, after>>10)
	}
	if n := runtime.NumGoroutine(); n > goroutinesBefore+2 {
		t.Errorf("goroutines %d -> %d across the pong flood", goroutinesBefore, n)
	}
	t.Logf("pong flood: heap in use %d KiB -> %d KiB, goroutines %d -> %d", before>>10, after>>10, goroutinesBefore, runtime.NumGoroutine())
	rc.write(dataFrame(opClose, closePayload(1000, "")))
	if code, _ := rc.expectClose(5 * time.Second); code != 1000 {
		t.Errorf("close reply %d, want 1000", code)
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Compression is off on both legs: a client offering permessage-deflate gets
// no extension, and the upstream is not offered one either (so the
// max_message_bytes limit is on wire bytes; no inflate bomb is possible).
func TestCompressionOfferDeclined(t *testing.T) {
	for _, offer := range []string{
		"permessage-deflate",
		"permessage-deflate; client_max_window_bits",
		"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
		"x-webkit-deflate-frame",
	} {
		t.Run(offer, func(t *testing.T) {
			g, rec := newRawGateway(t)
			hdr := authHeader(t)
			hdr.Set("Sec-WebSocket-Extensions", offer)
			rc := rawDial(t, g, "/ws/echo", hdr)
			if ext, ok := rc.resp.Header["Sec-Websocket-Extensions"]; ok {
				t.Fatalf("101 carries Sec-WebSocket-Extensions %q; compression must be off", ext)
			}
			if ext := rec.LastRequest(t).Header.Values("Sec-WebSocket-Extensions"); len(ext) > 0 {
				t.Errorf("upstream was offered extensions %q", ext)
			}
			rc.write(dataFrame(opText, []byte("plain")))
			if op, b := rc.readMessage(5 * time.Second); op != opText || string(b) != "plain" {
				t.Fatalf("echo: opcode %#x %q", op, b)
			}
			// A compressed frame (RSV1) is a protocol error, not inflated.
			rc.write(frame{fin: true, rsv: rsv1, opcode: opText, masked: true, payload: []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}})
			if code, reason := rc.expectClose(10 * time.Second); code != 1002 {
				t.Errorf("RSV1 frame after a declined offer: close %d %q, want 1002", code, reason)
			}
		})
	}
}

// The closes metric's code label is documented as the code sent to the
// client, so a protocol error must be counted as 1002.
func TestProtocolErrorCountedAs1002(t *testing.T) {
	g, rec := newRawGateway(t)
	rc := rawDial(t, g, "/ws/echo", authHeader(t))
	rc.write(frame{fin: true, rsv: rsv2, opcode: opText, masked: true, payload: []byte("x")})
	if code, _ := rc.expectClose(10 * time.Second); code != 1002 {
		t.Fatalf("wire close %d, want 1002", code)
	}
	rec.closed(t)
	wstest.WaitFor(t, "session end", func() bool { return g.h.Active() == 0 })
	got1002 := g.metric(t, "wsgate_closes_total", "route", "/ws/echo", "code", "1002", "side", "client")
	got1001 := g.metric(t, "wsgate_closes_total", "route", "/ws/echo", "code", "1001", "side", "client")
	if got1002 != 1 {
		t.Errorf(`wsgate_closes_total{code="1002",side="client"} = %v, want 1 (code="1001": %v)`, got1002, got1001)
	}
}

// TestBrokenPeerCannotHoldCloseHandshake: after refusing a frame, the
// library's close handshake would parse the refused frame's leftover bytes as
// a new frame, or drain the rest of an oversized one, with no deadline. A
// client that leaves such a frame unfinished and keeps its socket open must
// still be disconnected promptly, its session ended and its slot freed.
func TestBrokenPeerCannotHoldCloseHandshake(t *testing.T) {
	zeroKey := []byte{0, 0, 0, 0} // payload goes on the wire as written
	// An RSV2 frame whose payload reads as the header of a 64 KiB binary
	// frame that never arrives.
	rsvLure := append([]byte{0x80 | rsv2 | opBinary, 0x80 | 8}, zeroKey...)
	rsvLure = append(rsvLure, 0x80|opBinary, 0x80|126, 0xff, 0xff, 0, 0, 0, 0)
	// A binary frame announcing 2 MiB (the limit is 1 MiB) that stops just
	// past the limit.
	tooBig := append([]byte{0x80 | opBinary, 0x80 | 127}, binary.BigEndian.AppendUint64(nil, 2<<20)...)
	tooBig = append(tooBig, zeroKey...)
	tooBig = append(tooBig, make([]byte, 1<<20+16)...)

	cases := map[string]struct {
		wire   []byte
		want   uint16               // the client's close code
		wantUp websocket.StatusCode // the upstream's
	}{
		"rsv frame with a lure":           {rsvLure, 1002, websocket.StatusGoingAway},
		"oversized frame left unfinished": {tooBig, 1009, websocket.StatusMessageTooBig},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			g, rec := newRawGateway(t)
			rc := rawDial(t, g, "/ws/echo", authHeader(t))
			rec.LastRequest(t)
			rc.writeBytes(tc.wire)
			start := time.Now()
			code, reason := rc.expectClose(10 * time.Second) // answers the close, then waits for EOF
			if code != tc.want {
				t.Errorf("client got close %d %q, want %d", code, reason, tc.want)
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("server held the connection %v after refusing the frame, want about 1s", took.Round(time.Millisecond))
			}
			if upCode := rec.closed(t); upCode != tc.wantUp {
				t.Errorf("upstream got close %d, want %d", upCode, tc.wantUp)
			}
			wstest.WaitFor(t, "session end", func() bool { return g.h.Active() == 0 })
		})
	}
}
