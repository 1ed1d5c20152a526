package closecode_test

import (
	"testing"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/closecode"
)

// wireCode reports whether a peer may send code in a close frame
// (RFC 6455 §7.4: 1000-1014 except 1004-1006, and 3000-4999).
func wireCode(c websocket.StatusCode) bool {
	switch {
	case c == 1004 || c == 1005 || c == 1006:
		return false
	case c >= 1000 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// FuzzForwardable: whatever a leg reports (including the library's 1005 and
// 1006 and any int), the code sent on is one a close frame may carry, given a
// fallback that may (wsgate's are 1001 and 1014). fallbackPick chooses among
// every code a frame may carry.
func FuzzForwardable(f *testing.F) {
	var fallbacks []websocket.StatusCode
	for c := websocket.StatusCode(1000); c <= 4999; c++ {
		if wireCode(c) {
			fallbacks = append(fallbacks, c)
		}
	}
	f.Fuzz(func(t *testing.T, code int, fallbackPick uint16) {
		in := websocket.StatusCode(code)
		fb := fallbacks[int(fallbackPick)%len(fallbacks)]
		got := closecode.Forwardable(in, fb)
		if got == 1005 || got == 1006 || got == 1015 || !wireCode(got) {
			t.Fatalf("Forwardable(%d, %d) = %d: not a code a close frame may carry", code, fb, got)
		}
		switch {
		case in == websocket.StatusNoStatusRcvd:
			if got != closecode.Normal {
				t.Fatalf("Forwardable(1005) = %d, want 1000", got)
			}
		case wireCode(in):
			if got != in {
				t.Fatalf("Forwardable(%d) = %d: a sendable code must pass unchanged", code, got)
			}
		default:
			if got != fb {
				t.Fatalf("Forwardable(%d, %d) = %d, want the fallback", code, fb, got)
			}
		}
	})
}
