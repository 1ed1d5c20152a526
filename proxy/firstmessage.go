package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/closecode"
	"github.com/wsgate/wsgate/internal/zero"
)

// AuthFirstMessage is the Route.Auth of routes whose clients upgrade
// without a token and send it as their first message.
const AuthFirstMessage = "first_message"

// FirstMessage configures first-message authentication. Zero values are
// the documented defaults.
type FirstMessage struct {
	// Timeout is how long an upgraded client has to send its auth message
	// before it is closed with 4401. Defaults to 5s.
	Timeout time.Duration
	// MaxPending caps sockets waiting for their auth message; beyond it an
	// upgrade gets 503. Defaults to 1000; -1: unlimited.
	MaxPending int
}

// Defaults for FirstMessage's zero values.
const (
	DefaultFirstMessageTimeout = 5 * time.Second
	DefaultMaxPendingAuth      = 1000
)

func (f FirstMessage) withDefaults() FirstMessage {
	zero.Default(&f.Timeout, DefaultFirstMessageTimeout)
	zero.Default(&f.MaxPending, DefaultMaxPendingAuth)
	return f
}

func (f FirstMessage) validate(bad func(key, format string, args ...any)) {
	if f.Timeout < 0 || f.Timeout > time.Minute {
		bad("auth.first_message_timeout", "must be between 0 and 1m")
	}
	if f.MaxPending < -1 {
		bad("limits.max_pending_auth", "must be positive, or -1 to disable")
	}
}

// validAuthMode checks Route.Auth.
func validAuthMode(mode string) bool { return mode == "" || mode == AuthFirstMessage }

// firstMessage reports whether the route's clients authenticate with their
// first message. Such routes relay through coder/websocket on both legs
// (the client is accepted before anything else is known), so they are
// neither passthrough nor wire-client routes.
func (rt *route) firstMessage() bool { return rt.cfg.Auth == AuthFirstMessage }

// authMessage is what a first-message client sends.
type authMessage struct {
	Type  string `json:"type"`
	Token string `json:"token"`
}

// authAck is what wsgate answers once the handshake behind it succeeded.
type authAck struct {
	Type   string `json:"type"`
	OK     bool   `json:"ok"`
	User   string `json:"user"`
	Tenant string `json:"tenant,omitempty"`
}

// preauth marks a handshake whose client was admitted (origin, per-IP
// rate) before its upgrade and has sent its token in its first message.
type preauth struct{ token string }

type preauthKey struct{}

// preauthed reports whether ctx carries a first-message client's token:
// its per-IP handshake was counted when it upgraded.
func preauthed(ctx context.Context) bool { _, ok := ctx.Value(preauthKey{}).(*preauth); return ok }

// pendingAuth tracks sockets waiting for their auth message.
type pendingAuth struct {
	once   sync.Once
	ctx    context.Context // ends when Drain begins: every waiting socket is closed
	cancel context.CancelFunc
	slots  chan struct{} // semaphore: FirstMessage.MaxPending; nil when unlimited
}

func (h *Handler) pendingAuth() *pendingAuth {
	p := &h.pending
	p.once.Do(func() {
		p.ctx, p.cancel = context.WithCancel(context.Background())
		if n := h.cfg.FirstMessage.MaxPending; n > 0 {
			p.slots = make(chan struct{}, n)
		}
	})
	return p
}

// stopPending closes every socket still waiting for its auth message with
// 1001. Drain calls it.
func (h *Handler) stopPending() { h.pendingAuth().cancel() }

// serveFirstMessage runs a first-message route's connection: admit the
// upgrade (origin, per-IP rate, pending cap), accept it, wait for the auth
// message, then run the handshake a token would have run and hand the
// accepted client to a session.
func (h *Handler) serveFirstMessage(rt *route, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r = h.startTrace(r, rt) // tracing hook (trace.go): session and handshake spans, as for a token handshake
	p := h.pendingAuth()
	if err := h.admit(r.Context(), r); err != nil {
		h.reject(w, r, rt, err)
		return
	}
	if p.slots != nil {
		select {
		case p.slots <- struct{}{}:
		default:
			h.reject(w, r, rt, fmt.Errorf("%w: too many sockets waiting for their auth message", ErrCapacity))
			return
		}
	}
	released := false
	release := func() {
		if p.slots != nil && !released {
			released = true
			<-p.slots
		}
	}
	defer release()
	h.mu.Lock()
	if h.draining.Load() {
		h.mu.Unlock()
		h.reject(w, r, rt, ErrDraining)
		return
	}
	h.wg.Add(1) // Drain waits for waiting sockets too
	h.mu.Unlock()
	defer h.wg.Done()

	// The client's first offered subprotocol (not a token carrier) is both
	// what it gets and the only one offered to the upstream.
	// The socket outlives ServeHTTP: keep the request's values (the trace)
	// but not its cancellation.
	r = r.Clone(context.WithoutCancel(r.Context()))
	offered := h.verifier.Subprotocols(r.Header)
	r.Header.Del("Sec-WebSocket-Protocol")
	pre := &handshake{}
	if len(offered) > 0 {
		pre.subprotocol = offered[0]
		r.Header.Set("Sec-WebSocket-Protocol", offered[0])
	}
	client, clientRaw, err := h.acceptConn(w, r, pre)
	if err != nil {
		h.metrics.handshakes.WithLabelValues(rt.cfg.Path, "accept_failed").Inc()
		traceRejected(r.Context(), 0, err)
		return
	}
	token, err := h.awaitAuth(p.ctx, client, clientRaw)
	release()
	if err != nil {
		traceRejected(r.Context(), http.StatusUnauthorized, err)
		h.firstMessageFailed(rt, r, err)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Limits.HandshakeTimeout)
	ctx = context.WithValue(ctx, preauthKey{}, &preauth{token: token})
	hs, err := h.handshake(ctx, rt, r)
	cancel()
	if err != nil {
		code, reason := closeForHandshake(err)
		closeBounded(client, clientRaw, code, reason, closeHandshakeTimeout)
		traceRejected(r.Context(), statusFor(err), err)
		h.firstMessageFailed(rt, r, err)
		return
	}
	ack, _ := json.Marshal(authAck{Type: "wsgate.auth", OK: true, User: hs.id.User, Tenant: hs.id.Tenant})
	wctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
	err = client.Write(wctx, websocket.MessageText, ack)
	cancel()
	if err != nil {
		h.metrics.handshakes.WithLabelValues(rt.cfg.Path, "accept_failed").Inc()
		traceRejected(r.Context(), 0, err)
		h.release(hs, "client went away")
		client.CloseNow()
		return
	}
	h.startSession(rt, r, hs, client, clientRaw, start)
}

// errAuthMessage and errAuthTimeout are why a waiting socket was closed
// with 4401 before any handshake ran.
var (
	errAuthMessage = errors.New(`first message must be {"type":"auth","token":"<JWT>"}`)
	errAuthTimeout = errors.New("no auth message in time")
	errAuthDrain   = errors.New("server shutting down")
	errAuthRead    = errors.New("client went away before authenticating")
)

// awaitAuth reads the client's first message within FirstMessage.Timeout
// and returns its token. On failure the client has been closed (4401, or
// 1001 when drain ends the wait). A read in progress is never cut by a
// context (coder/websocket would drop the socket without a close frame):
// the timer closes the socket with 4401 instead, which ends the read.
func (h *Handler) awaitAuth(drain context.Context, client *websocket.Conn, raw net.Conn) (string, error) {
	client.SetReadLimit(int64(auth.DefaultMaxTokenBytes) + 1024)
	var once sync.Once
	var cutErr error
	cut := make(chan struct{})
	cutOff := func(code websocket.StatusCode, err error, reason string) {
		once.Do(func() {
			cutErr = err
			closeBounded(client, raw, code, reason, brokenPeerTimeout)
			close(cut)
		})
	}
	t := time.AfterFunc(h.cfg.FirstMessage.Timeout, func() {
		cutOff(closecode.Unauthorized, errAuthTimeout, "auth failed: "+errAuthTimeout.Error())
	})
	stopDrain := context.AfterFunc(drain, func() {
		cutOff(closecode.GoingAway, errAuthDrain, "server shutting down")
	})
	typ, b, err := client.Read(context.Background())
	t.Stop()
	stopDrain()
	mine := false
	once.Do(func() { mine = true })
	if !mine { // a cut-off ran or is running: its verdict stands
		<-cut
		return "", cutErr
	}
	if err != nil {
		client.CloseNow()
		return "", fmt.Errorf("%w: %w", errAuthRead, err)
	}
	var m authMessage
	if typ != websocket.MessageText || json.Unmarshal(b, &m) != nil || m.Type != "auth" || m.Token == "" {
		closeBounded(client, raw, closecode.Unauthorized, "auth failed: "+errAuthMessage.Error(), brokenPeerTimeout)
		return "", errAuthMessage
	}
	return m.Token, nil
}

// closeForHandshake is the close a first-message client gets when the
// handshake behind its auth message fails: the HTTP status a token
// handshake would have got, as a close code.
func closeForHandshake(err error) (websocket.StatusCode, string) {
	code := closecode.InternalError
	reason := err.Error()
	switch status := statusFor(err); {
	case errors.Is(err, ErrDraining):
		code, reason = closecode.GoingAway, "server shutting down"
	case status == http.StatusUnauthorized:
		code, reason = closecode.Unauthorized, "auth failed: "+reason
	case status == http.StatusForbidden:
		code = closecode.AccessDenied
	case status == http.StatusTooManyRequests, status == http.StatusServiceUnavailable:
		code = closecode.TryAgainLater
	case isUpstreamRefusal(err), status == http.StatusBadGateway, status == http.StatusGatewayTimeout:
		code = closecode.BadGateway // the upstream refused or failed
	case status >= 400 && status < 500:
		code = closecode.PolicyViolation // wsgate refused the request itself (a bad path parameter)
	}
	return code, closeReason(reason)
}

// isUpstreamRefusal reports whether err is the upstream's own refusal of
// the handshake (its 4xx passed through).
func isUpstreamRefusal(err error) bool {
	var ue *UpstreamError
	return errors.As(err, &ue)
}

// closeReason fits s into a close frame's 123 bytes without cutting a
// UTF-8 sequence: a close reason must be valid UTF-8.
func closeReason(s string) string {
	if len(s) <= 123 {
		return s
	}
	s = s[:123]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// firstMessageFailed counts and logs a first-message client that never
// reached a session. The reason never holds the token.
func (h *Handler) firstMessageFailed(rt *route, r *http.Request, err error) {
	result := "unauthorized"
	switch {
	case errors.Is(err, errAuthDrain):
		result = "unavailable"
	case errors.Is(err, errAuthTimeout), errors.Is(err, errAuthMessage):
	case errors.Is(err, errAuthRead):
		result = "client_gone"
	default:
		result = resultFor(statusFor(err))
	}
	h.metrics.handshakes.WithLabelValues(rt.cfg.Path, result).Inc()
	if ce := h.log.Check(zap.InfoLevel, "first_message_auth_failed"); ce != nil {
		ce.Write(zap.String("route", rt.cfg.Path), zap.String("path", r.URL.Path),
			zap.String("remote", r.RemoteAddr), zap.String("reason", err.Error()))
	}
}
