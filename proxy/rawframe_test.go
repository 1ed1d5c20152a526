package proxy_test

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// RFC 6455 opcodes.
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xa
)

// RSV bits of a frame's first byte.
const (
	rsv1 byte = 0x40
	rsv2 byte = 0x20
	rsv3 byte = 0x10
)

// frame is one WebSocket frame as it goes on the wire. Frames are built by
// hand so tests can send what no well-behaved library would.
type frame struct {
	fin     bool
	rsv     byte // any of rsv1|rsv2|rsv3
	opcode  byte
	masked  bool // on write: mask with a random key; on read: the frame was masked
	payload []byte
}

// dataFrame is a final, masked frame: what a conforming client sends.
func dataFrame(opcode byte, payload []byte) frame {
	return frame{fin: true, opcode: opcode, masked: true, payload: payload}
}

// closePayload is a close frame body: the code, big-endian, then the reason.
func closePayload(code uint16, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	return append(b, reason...)
}

// encode renders f with the shortest length encoding (RFC 6455 §5.2).
func (f frame) encode() []byte {
	b0 := f.opcode&0x0f | f.rsv&0x70
	if f.fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var maskBit byte
	if f.masked {
		maskBit = 0x80
	}
	switch n := len(f.payload); {
	case n <= 125:
		out = append(out, maskBit|byte(n))
	case n <= 0xffff:
		out = append(out, maskBit|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, maskBit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !f.masked {
		return append(out, f.payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	out = append(out, key[:]...)
	for i, c := range f.payload {
		out = append(out, c^key[i%4])
	}
	return out
}

// readFrame parses one frame from br, unmasking it if it is masked.
func readFrame(br *bufio.Reader) (frame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return frame{}, err
	}
	f := frame{fin: hdr[0]&0x80 != 0, rsv: hdr[0] & 0x70, opcode: hdr[0] & 0x0f, masked: hdr[1]&0x80 != 0}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			return frame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(br, ext[:]); err != nil {
			return frame{}, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 64<<20 {
		return frame{}, fmt.Errorf("frame of %d bytes: refusing to buffer it", n)
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(br, key[:]); err != nil {
			return frame{}, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(br, f.payload); err != nil {
		return frame{}, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= key[i%4]
		}
	}
	return f, nil
}

// rawConn is a client WebSocket over a plain TCP connection: the handshake
// and every frame are written by hand.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	resp *http.Response
	// upstreamSide: this is the upstream end, where wsgate is the client
	// and must mask every frame.
	upstreamSide bool
}

// rawDial performs the opening handshake on a fresh TCP connection to g and
// fails the test unless the answer is a valid 101. hdr adds request headers.
func rawDial(t *testing.T, g *gateway, path string, hdr http.Header) *rawConn {
	t.Helper()
	addr := strings.TrimPrefix(g.URL, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])

	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, addr)
	fmt.Fprintf(&b, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key)
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	req, _ := http.NewRequest(http.MethodGet, path, nil)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("handshake: status %d, want 101: %s", resp.StatusCode, body)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
	}
	conn.SetDeadline(time.Time{})
	return &rawConn{t: t, conn: conn, br: br, resp: resp}
}

// write sends frames in one TCP write.
func (rc *rawConn) write(frames ...frame) {
	rc.t.Helper()
	var buf []byte
	for _, f := range frames {
		buf = append(buf, f.encode()...)
	}
	rc.writeBytes(buf)
}

func (rc *rawConn) writeBytes(b []byte) {
	rc.t.Helper()
	rc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.conn.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// next reads the next frame the server sends, failing the test on timeout.
func (rc *rawConn) next(within time.Duration) frame {
	rc.t.Helper()
	rc.conn.SetReadDeadline(time.Now().Add(within))
	f, err := readFrame(rc.br)
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	if f.masked != rc.upstreamSide {
		rc.t.Fatalf("frame (opcode %#x) masked=%v: RFC 6455 §5.1 has clients mask and servers not", f.opcode, f.masked)
	}
	return f
}

// readMessage reassembles the next data message, answering nothing and
// skipping pongs. It fails the test on a close frame.
func (rc *rawConn) readMessage(within time.Duration) (opcode byte, payload []byte) {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		f := rc.next(time.Until(deadline))
		switch f.opcode {
		case opPing, opPong:
			continue
		case opClose:
			code, reason := parseClose(rc.t, f)
			rc.t.Fatalf("got close %d %q while waiting for a message", code, reason)
		case opText, opBinary:
			if opcode != 0 {
				rc.t.Fatalf("new message (opcode %#x) inside a fragmented one", f.opcode)
			}
			opcode = f.opcode
		case opContinuation:
			if opcode == 0 {
				rc.t.Fatal("continuation frame without a message")
			}
		default:
			rc.t.Fatalf("unexpected opcode %#x", f.opcode)
		}
		if f.rsv != 0 {
			rc.t.Fatalf("server set RSV bits %#x", f.rsv)
		}
		payload = append(payload, f.payload...)
		if f.fin {
			return opcode, payload
		}
	}
}

// expectClose reads until the server's close frame, answers it as RFC 6455
// §5.5.1 asks, and returns its code and reason. Data frames before it are
// skipped; the connection must then end.
func (rc *rawConn) expectClose(within time.Duration) (uint16, string) {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		f := rc.next(time.Until(deadline))
		if f.opcode != opClose {
			continue
		}
		code, reason := parseClose(rc.t, f)
		// The reply may fail if the server has already dropped the socket.
		rc.conn.SetWriteDeadline(time.Now().Add(time.Second))
		rc.conn.Write(frame{fin: true, opcode: opClose, masked: true, payload: f.payload}.encode())
		rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, rc.br); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			rc.t.Errorf("after close: %v", err)
		}
		return code, reason
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// parseClose checks a close frame's shape and returns its code and reason.
func parseClose(t *testing.T, f frame) (uint16, string) {
	t.Helper()
	if !f.fin || len(f.payload) > 125 {
		t.Fatalf("malformed close frame: fin=%v len=%d", f.fin, len(f.payload))
	}
	if len(f.payload) == 0 {
		return 1005, "" // no status: what the receiver reports, never on the wire
	}
	if len(f.payload) == 1 {
		t.Fatalf("close frame with a 1-byte payload")
	}
	return binary.BigEndian.Uint16(f.payload), string(f.payload[2:])
}
