package proxy

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/closecode"
)

// The close a first-message client gets for a failed handshake: wsgate's
// own refusals are not blamed on the upstream, and a long reason is cut on
// a UTF-8 boundary.
func TestCloseForHandshake(t *testing.T) {
	cases := map[string]struct {
		err  error
		want websocket.StatusCode
	}{
		"bad token":                {auth.ErrSignature, closecode.Unauthorized},
		"require refuses the path": {fmt.Errorf("%w: no", ErrForbidden), closecode.AccessDenied},
		"rate limited":             {ErrRateLimited, closecode.TryAgainLater},
		"draining":                 {ErrDraining, closecode.GoingAway},
		"upstream 403 passes on":   {&UpstreamError{Status: 403}, closecode.AccessDenied}, // the upstream's verdict, as for a token handshake
		"upstream 404":             {&UpstreamError{Status: 404}, closecode.BadGateway},
		"upstream down":            {ErrUpstreamDown, closecode.BadGateway},
		"upstream timeout":         {ErrUpstreamTimeout, closecode.BadGateway},
		"bad channel parameter":    {fmt.Errorf("%w: value for {doc}", ErrBadParam), closecode.PolicyViolation},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got, _ := closeForHandshake(tc.err); got != tc.want {
				t.Fatalf("code %d, want %d", got, tc.want)
			}
		})
	}
	long := fmt.Errorf("%w: %s", ErrForbidden, strings.Repeat("é", 100)) // 2 bytes each
	_, reason := closeForHandshake(long)
	if len(reason) > 123 || !utf8.ValidString(reason) {
		t.Fatalf("reason of %d bytes, valid UTF-8 %v", len(reason), utf8.ValidString(reason))
	}
}
