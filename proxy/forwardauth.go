package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
)

// VerifyHandler answers Traefik ForwardAuth (and similar) subrequests: 200
// with X-User-Id and X-Tenant-Id for a valid token, 401 otherwise. The token
// is read from the request itself, or from the query of X-Forwarded-Uri, the
// original URI a gateway forwards. Only GET and HEAD are answered (405
// otherwise). Failed checks spend the client address's
// limits.failed_verifications_per_second_per_ip budget; when it is empty the
// answer is 429 without verifying, so the endpoint is no token oracle.
// Every answer is counted in wsgate_forward_auth_total{result}.
func (h *Handler) VerifyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.metrics.forwardAuth.WithLabelValues("bad_method").Inc()
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
			return
		}
		addr := clientAddr(r, h.trusted)
		if h.failRate.exhausted(addr, time.Now()) {
			h.metrics.forwardAuth.WithLabelValues("rate_limited").Inc()
			w.Header().Set("Retry-After", "1")
			http.Error(w, http.StatusText(http.StatusTooManyRequests)+": too many failed verifications", http.StatusTooManyRequests)
			return
		}
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
				h.failRate.allow(addr, time.Now()) // spend one
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			h.metrics.forwardAuth.WithLabelValues(resultFor(status)).Inc()
			if ce := h.log.Check(zap.InfoLevel, "forward_auth_rejected"); ce != nil {
				ce.Write(zap.Int("status", status), zap.String("client", addr), zap.String("reason", err.Error()))
			}
			http.Error(w, fmt.Sprintf("%s: %v", http.StatusText(status), err), status)
			return
		}
		h.metrics.forwardAuth.WithLabelValues("ok").Inc()
		w.Header().Set("X-User-Id", id.User)
		if id.Tenant != "" {
			w.Header().Set("X-Tenant-Id", id.Tenant)
		}
		w.WriteHeader(http.StatusOK)
	})
}
