package proxy

import (
	"net/http"
	"net/url"

	"github.com/wsgate/wsgate/auth"
)

// VerifyHandler answers Traefik ForwardAuth (and similar) subrequests: 200
// with X-User-Id and X-Tenant-Id for a valid token, 401 otherwise. The token
// is read from the request itself, or from the query of X-Forwarded-Uri, the
// original URI a gateway forwards.
func (h *Handler) VerifyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := r
		if _, _, err := h.verifier.Extract(r); err != nil {
			if fu := r.Header.Get("X-Forwarded-Uri"); fu != "" {
				if u, perr := url.ParseRequestURI(fu); perr == nil {
					req = r.Clone(r.Context())
					req.URL.RawQuery = u.RawQuery
				}
			}
		}
		raw, _, err := h.verifier.Extract(req)
		var id *auth.Identity
		if err == nil {
			id, err = h.verifier.Verify(r.Context(), raw)
		}
		if err != nil {
			status := statusFor(err)
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			http.Error(w, http.StatusText(status)+": "+err.Error(), status)
			return
		}
		w.Header().Set("X-User-Id", id.User)
		if id.Tenant != "" {
			w.Header().Set("X-Tenant-Id", id.Tenant)
		}
		w.WriteHeader(http.StatusOK)
	})
}
