package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
)

// UseTickets enables one-time connection tickets: POST /auth/ticket
// (TicketHandler) issues them and the upgrade redeems ?ticket=. Call it
// before serving.
func (h *Handler) UseTickets(t *auth.Tickets) { h.tickets = t }

// ticketRoute labels ticket requests in wsgate_handshakes_total.
const ticketRoute = TicketPath

// errTokenInQuery refuses a ticket request that puts the token in its URL,
// the very place tickets exist to keep it out of.
var errTokenInQuery = errors.New("the token must be sent in the Authorization header or the cookie, not the URL")

// TicketHandler serves POST /auth/ticket on the public listener: a valid
// token in Authorization: Bearer or the configured cookie (never the query)
// buys a one-time ticket, answered as {"ticket":"...","expires_in":N}.
// Browser pages on allowed_origins may call it with fetch and credentials
// (CORS, preflight included). Issuing counts against the per-IP and
// per-user handshake rates, as a handshake does.
func (h *Handler) TicketHandler() http.Handler { return http.HandlerFunc(h.serveTicket) }

func (h *Handler) serveTicket(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Add("Vary", "Origin")
	if origin := r.Header.Get("Origin"); origin != "" {
		if !h.origins.allowed(r, requestScheme(r, h.peerTrusted(r))) {
			h.ticketRefused(w, r, ErrOrigin)
			return
		}
		hdr.Set("Access-Control-Allow-Origin", origin)
		hdr.Set("Access-Control-Allow-Credentials", "true")
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions: // CORS preflight: Authorization is not a simple header
		hdr.Set("Access-Control-Allow-Methods", "POST")
		hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		hdr.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		hdr.Set("Allow", "POST, OPTIONS")
		http.Error(w, "method not allowed: POST a token to get a ticket", http.StatusMethodNotAllowed)
		return
	}
	if h.tickets == nil {
		http.NotFound(w, r)
		return
	}
	ticket, ttl, err := h.issueTicket(r)
	if err != nil {
		h.ticketRefused(w, r, err)
		return
	}
	h.metrics.handshakes.WithLabelValues(ticketRoute, "ok").Inc()
	hdr.Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}{ticket, max(1, int(ttl/time.Second))})
}

// issueTicket runs a handshake's checks up to verification and rates, and
// files a ticket for the token.
func (h *Handler) issueTicket(r *http.Request) (string, time.Duration, error) {
	if h.draining.Load() {
		return "", 0, ErrDraining
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Limits.HandshakeTimeout)
	defer cancel()
	if err := h.allowIP(ctx, r); err != nil {
		return "", 0, err
	}
	if vals := r.URL.Query(); vals.Has(h.verifier.QueryParam()) {
		return "", 0, errTokenInQuery
	}
	// Only the header and the cookie: no query (refused above), and a
	// POST carries no subprotocols.
	plain := r.Clone(ctx)
	plain.URL.RawQuery = ""
	plain.Header.Del("Sec-WebSocket-Protocol")
	raw, _, err := h.verifier.Extract(plain)
	if err != nil {
		return "", 0, err
	}
	id, err := h.verifier.Verify(ctx, raw)
	if err != nil {
		return "", 0, err
	}
	if err := h.allowUser(ctx, userKey(id.Tenant, id.User)); err != nil {
		return "", 0, err
	}
	return h.tickets.Issue(ctx, raw, id)
}

// ticketRefused answers a failed ticket request as reject answers a
// handshake: the status statusFor gives, the reason, never the token.
func (h *Handler) ticketRefused(w http.ResponseWriter, r *http.Request, err error) {
	status := statusFor(err)
	if errors.Is(err, errTokenInQuery) {
		status = http.StatusBadRequest
	}
	h.metrics.handshakes.WithLabelValues(ticketRoute, resultFor(status)).Inc()
	if ce := h.log.Check(zap.InfoLevel, "ticket_refused"); ce != nil {
		ce.Write(zap.Int("status", status), zap.String("remote", r.RemoteAddr), zap.String("reason", err.Error()))
	}
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, http.StatusText(status)+": "+err.Error(), status)
}

// credential returns the token a handshake presents: the token of a
// first-message client (firstmessage.go), the token a ?ticket= stands for
// (spending the ticket), or what the verifier's Extract finds. A ticket
// wins over other carriers, so a browser's cookie does not get in its way.
func (h *Handler) credential(ctx context.Context, r *http.Request) (string, error) {
	if p, ok := ctx.Value(preauthKey{}).(*preauth); ok {
		return p.token, nil
	}
	if h.tickets != nil {
		ticket, found, err := h.tickets.FromRequest(r)
		if err != nil {
			return "", err
		}
		if found {
			return h.tickets.Redeem(ctx, ticket)
		}
	}
	raw, _, err := h.verifier.Extract(r)
	return raw, err
}

// ownQueryParams are the query parameters wsgate consumes and never
// forwards upstream, besides the token's: the ticket's.
func (h *Handler) ownQueryParams() []string {
	if h.tickets == nil {
		return nil
	}
	return []string{h.tickets.Param()}
}
