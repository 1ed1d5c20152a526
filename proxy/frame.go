package proxy

// RFC 6455 framing for the passthrough relay (relay.go): headers are parsed
// and checked here, payloads are never copied or unmasked except for the
// control frames wsgate answers itself.

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"

	"github.com/coder/websocket"
)

// Opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// maxControlPayload bounds ping, pong and close payloads (RFC 6455 §5.5).
const maxControlPayload = 125

// maxHeaderLen is the longest frame header: 2 bytes, an 8-byte length and
// a 4-byte mask key.
const maxHeaderLen = 14

// frameHeader is one parsed frame header.
type frameHeader struct {
	fin     bool
	rsv     byte // the three RSV bits, in place (0x70)
	opcode  byte
	masked  bool
	key     [4]byte
	length  int64
	hdrLen  int // bytes the header took on the wire
	control bool
}

// errShortHeader: b holds only part of a header.
var errShortHeader = errors.New("short frame header")

// errProtocol is a frame the relay refuses (answered with 1002).
type errProtocol string

func (e errProtocol) Error() string { return "protocol error: " + string(e) }

// parseHeader parses the frame header at the start of b.
func parseHeader(b []byte) (h frameHeader, err error) {
	if len(b) < 2 {
		return h, errShortHeader
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = b[0] & 0x70
	h.opcode = b[0] & 0x0f
	h.control = h.opcode&0x8 != 0
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, errShortHeader
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, errShortHeader
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return h, errProtocol("payload length with the high bit set")
		}
		h.length = int64(u)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, errShortHeader
		}
		copy(h.key[:], b[n:n+4])
		n += 4
	}
	h.hdrLen = n
	return h, nil
}

// check applies the rules that do not depend on the message in progress.
// fromClient: the frame came from a browser (it must be masked); otherwise
// from the upstream (it must not be).
func (h *frameHeader) check(fromClient bool) error {
	switch {
	case h.rsv != 0:
		return errProtocol("RSV bits set without a negotiated extension")
	case fromClient && !h.masked:
		return errProtocol("unmasked frame from the client")
	case !fromClient && h.masked:
		return errProtocol("masked frame from the server")
	case h.opcode > opBinary && h.opcode < opClose || h.opcode > opPong:
		return errProtocol("reserved opcode")
	case h.control && h.length > maxControlPayload:
		return errProtocol("control frame payload over 125 bytes")
	case h.control && !h.fin:
		return errProtocol("fragmented control frame")
	}
	return nil
}

// unmask XORs p, which starts at payload offset pos, with key.
func unmask(p []byte, key [4]byte, pos int) {
	for i := range p {
		p[i] ^= key[(pos+i)&3]
	}
}

// appendHeader appends the header of a final frame of n payload bytes
// (RFC 6455 §5.2); masked sets the mask bit (the key follows, added by the
// caller).
func appendHeader(dst []byte, opcode byte, n int, masked bool) []byte {
	var m byte
	if masked {
		m = 0x80
	}
	dst = append(dst, 0x80|opcode)
	switch {
	case n <= 125:
		return append(dst, m|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, m|126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|127), uint64(n))
}

// appendFrame appends a final control frame wsgate originates. masked: the
// frame goes to the upstream, where wsgate is the client (RFC 6455 §5.3).
func appendFrame(dst []byte, opcode byte, payload []byte, masked bool) []byte {
	dst = appendHeader(dst, opcode, len(payload), masked)
	if !masked {
		return append(dst, payload...)
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	unmask(dst[start:], key, 0)
	return dst
}

// closeBody is a close frame's payload for code and reason. 1005 has no body;
// codes a peer may not send become 1011, as coder/websocket does.
func closeBody(code websocket.StatusCode, reason string) []byte {
	if code == websocket.StatusNoStatusRcvd {
		return nil
	}
	if !validWireCode(code) {
		code, reason = websocket.StatusInternalError, ""
	}
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return append(b, reason...)
}

// parseCloseBody reads a close frame's (unmasked) payload.
func parseCloseBody(p []byte) (websocket.CloseError, error) {
	switch {
	case len(p) == 0:
		return websocket.CloseError{Code: websocket.StatusNoStatusRcvd}, nil
	case len(p) == 1:
		return websocket.CloseError{}, errProtocol("close payload of 1 byte")
	}
	code := websocket.StatusCode(binary.BigEndian.Uint16(p))
	if !validWireCode(code) {
		return websocket.CloseError{}, errProtocol("close code not allowed on the wire")
	}
	return websocket.CloseError{Code: code, Reason: string(p[2:])}, nil
}

// validWireCode reports whether a peer may send code (RFC 6455 §7.4).
func validWireCode(code websocket.StatusCode) bool {
	switch {
	case code == 1004 || code == websocket.StatusNoStatusRcvd || code == websocket.StatusAbnormalClosure || code == websocket.StatusTLSHandshake:
		return false
	case code >= websocket.StatusNormalClosure && code <= websocket.StatusBadGateway:
		return true
	}
	return code >= 3000 && code <= 4999
}
