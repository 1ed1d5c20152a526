package proxy

import (
	"net/http"

	"github.com/wsgate/wsgate/auth"
)

// SignAssertions makes every upstream handshake carry X-Wsgate-Assertion,
// signed by s. Call it before serving. Without it the header is absent.
func (h *Handler) SignAssertions(s *auth.Signer) { h.signer = s }

// assert adds the signed identity assertion for one upstream handshake to
// hdr. hdr is built from verified data only, so a client's own
// X-Wsgate-Assertion never gets this far.
func (h *Handler) assert(hdr http.Header, target string, id *auth.Identity, reqID string) error {
	if h.signer == nil {
		return nil
	}
	a, err := h.signer.Sign(auth.Assertion{Audience: auth.AudienceOf(target), User: id.User, Tenant: id.Tenant, RequestID: reqID})
	if err != nil {
		return err
	}
	hdr.Set(auth.AssertionHeader, a)
	return nil
}
