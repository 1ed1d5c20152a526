package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
)

// Handshake failures. Each maps to one HTTP status in statusFor; no upgrade
// happens before any of them.
var (
	ErrNoRoute          = errors.New("no route")
	ErrNotWebSocket     = errors.New("not a WebSocket upgrade request")
	ErrOrigin           = errors.New("origin not allowed")
	ErrForbidden        = errors.New("token does not grant this path")
	ErrBadParam         = errors.New("path parameter not allowed")
	ErrDraining         = errors.New("server is draining")
	ErrUpstreamDown     = errors.New("upstream unreachable")
	ErrUpstreamTimeout  = errors.New("upstream dial timed out")
	ErrUpstreamProtocol = errors.New("upstream did not complete the WebSocket handshake")
)

// UpstreamError is an upstream's own refusal of the handshake.
type UpstreamError struct {
	Status int
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("upstream refused the handshake with status %d", e.Status)
}

// statusFor is the one mapping from handshake errors to HTTP statuses.
func statusFor(err error) int {
	var ue *UpstreamError
	switch {
	case errors.As(err, &ue):
		if ue.Status >= 400 && ue.Status < 500 {
			return ue.Status // the upstream's own verdict, passed through
		}
		return http.StatusBadGateway
	case errors.Is(err, ErrNoRoute):
		return http.StatusNotFound
	case errors.Is(err, ErrNotWebSocket):
		return http.StatusUpgradeRequired
	case errors.Is(err, ErrOrigin), errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrBadParam):
		return http.StatusBadRequest
	case errors.Is(err, ErrUserLimit), errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrCapacity):
		return http.StatusServiceUnavailable
	case errors.Is(err, auth.ErrNotReady), errors.Is(err, ErrDraining), errors.Is(err, bridge.ErrUnavailable),
		errors.Is(err, auth.ErrTicketStore):
		return http.StatusServiceUnavailable
	case errors.Is(err, auth.ErrNoToken), errors.Is(err, auth.ErrMalformed), errors.Is(err, auth.ErrSignature),
		errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrNotYetValid), errors.Is(err, auth.ErrClaims),
		errors.Is(err, auth.ErrTicket):
		return http.StatusUnauthorized
	case errors.Is(err, ErrUpstreamTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrUpstreamDown), errors.Is(err, ErrUpstreamProtocol):
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// resultFor names a handshake outcome for the handshakes metric.
func resultFor(status int) string {
	switch status {
	case http.StatusSwitchingProtocols:
		return "ok"
	case http.StatusNotFound:
		return "no_route"
	case http.StatusUpgradeRequired:
		return "not_websocket"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusBadGateway:
		return "upstream_error"
	case http.StatusGatewayTimeout:
		return "upstream_timeout"
	}
	if status >= 400 && status < 500 {
		return "upstream_rejected"
	}
	return "error"
}
