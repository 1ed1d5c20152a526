package proxy

import (
	"bytes"
	"testing"
)

// FuzzParseHeader: any bytes parse without panicking; a parsed header
// never claims more bytes than it read, and the header wsgate writes for
// a final frame parses back to the same opcode and length.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4}, byte(opText), 5)
	f.Add([]byte{0x82, 0x7e, 0xff, 0xff}, byte(opBinary), 70000)
	f.Add([]byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1}, byte(opPing), 125)
	f.Add([]byte{0x88}, byte(opClose), 0)
	f.Fuzz(func(t *testing.T, b []byte, op byte, n int) {
		if h, err := parseHeader(b); err == nil {
			if h.hdrLen > len(b) || h.hdrLen < 2 || h.hdrLen > maxHeaderLen || h.length < 0 {
				t.Fatalf("header %+v from %d bytes", h, len(b))
			}
			_ = h.check(true)
			_ = h.check(false)
		}
		if n < 0 || n > 1<<40 {
			return
		}
		op &= 0x0f
		hdr := appendHeader(nil, op, n, false)
		h, err := parseHeader(hdr)
		if err != nil || h.opcode != op || h.length != int64(n) || !h.fin || h.masked || h.hdrLen != len(hdr) {
			t.Fatalf("appendHeader(%#x, %d) = %x parses as %+v, %v", op, n, hdr, h, err)
		}
		if n <= maxControlPayload {
			payload := bytes.Repeat([]byte{0xa5}, n)
			fr := appendFrame(nil, op, payload, true)
			h, err := parseHeader(fr)
			if err != nil || !h.masked || h.length != int64(n) {
				t.Fatalf("masked frame %x parses as %+v, %v", fr, h, err)
			}
			got := append([]byte(nil), fr[h.hdrLen:]...)
			unmask(got, h.key, 0)
			if !bytes.Equal(got, payload) {
				t.Fatalf("masked payload does not unmask to the original")
			}
		}
	})
}
