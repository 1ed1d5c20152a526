package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
)

// Handler serves the public WebSocket routes. Each accepted connection runs
// until either side closes, the token expires, a heartbeat fails, or Drain
// closes it. ServeHTTP returns once the upgrade is done: the connection then
// runs on goroutines the Handler owns (Drain waits for them), so net/http's
// per-request state is freed for the life of the socket.
type Handler struct {
	// Static after construction.
	cfg      Config
	verifier *auth.Verifier
	hub      *bridge.Hub // nil when no route uses channels
	log      *zap.Logger
	metrics  *metrics
	mux      *http.ServeMux
	dialer   *http.Client
	origins  originMatcher
	trusted  []*net.IPNet
	ipRate   *keyedBuckets
	userRate *keyedBuckets
	failRate *keyedBuckets // failed /auth/verify checks per client address
	pubRate  *byteBudget   // publish bytes per (tenant, user)
	conns    counters
	dials    chan struct{} // semaphore: MaxConcurrentDials; nil when unlimited
	shared   SharedLimits  // nil: limits are per process
	// Issue 15 hooks (ticket.go, assertion.go, firstmessage.go): tickets
	// and signer are set before serving, nil when unused.
	tickets *auth.Tickets
	signer  *auth.Signer
	pending pendingAuth

	draining atomic.Bool

	obs observer // observe.go: histograms and gauges beyond metrics.go

	mu       sync.Mutex
	sessions map[*session]struct{} // guarded by mu
	ended    traffic               // guarded by mu: what ended sessions relayed
	wg       sync.WaitGroup        // one per live session
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler. hub may be nil if no route subscribes or publishes.
// log and reg may be nil.
func New(cfg Config, v *auth.Verifier, hub *bridge.Hub, log *zap.Logger, reg prometheus.Registerer) (*Handler, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg:      cfg,
		verifier: v,
		hub:      hub,
		log:      log,
		metrics:  newMetrics(reg),
		mux:      http.NewServeMux(),
		dialer:   newDialClient(cfg.DialTimeout, cfg.UpstreamTLS),
		origins:  newOriginMatcher(cfg.AllowedOrigins),
		trusted:  parseCIDRs(cfg.Limits.TrustedProxies),
		ipRate:   newKeyedBuckets(cfg.Limits.HandshakesPerSecondPerIP),
		userRate: newKeyedBuckets(cfg.Limits.HandshakesPerSecondPerUser),
		failRate: newKeyedBuckets(cfg.Limits.FailedVerificationsPerSecondPerIP),
		pubRate:  newByteBudget(cfg.Limits.PublishBytesPerSecond, cfg.MaxMessageBytes),
		sessions: make(map[*session]struct{}),
		ended:    make(traffic),
	}
	if reg != nil {
		reg.MustRegister(newTrafficCollector(h))
		h.obs.register(h, reg) // observability hook (observe.go)
	}
	h.conns.perUser = make(map[string]int)
	h.conns.perTenant = make(map[string]int)
	if n := cfg.Limits.MaxConcurrentDials; n > 0 {
		h.dials = make(chan struct{}, n)
	}
	for i := range cfg.Routes {
		rt, err := newRoute(cfg.Routes[i])
		if err != nil {
			return nil, err
		}
		if rt.bridged() && hub == nil {
			return nil, fmt.Errorf("route %s uses channels but no bridge hub was given", rt.cfg.Path)
		}
		h.mux.Handle(rt.cfg.Path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(rt, w, r) }))
	}
	h.mux.Handle(VerifyPath, h.VerifyHandler())
	return h, nil
}

// Handle adds a plain HTTP handler to the public listener (the demo's
// page). pattern must not collide with a route or a reserved path; call it
// before serving.
func (h *Handler) Handle(pattern string, handler http.Handler) error {
	if err := register(h.mux, pattern, handler); err != nil {
		return fmt.Errorf("%s: %w", pattern, err)
	}
	return nil
}

// ShareLimits makes the per-user and per-tenant caps and the handshake
// rates fleet-wide. Call it before serving.
func (h *Handler) ShareLimits(s SharedLimits) { h.shared = s }

// ServeHTTP routes r to its WebSocket route, the ForwardAuth endpoint or a
// handler added with Handle, or answers 404. It never redirects: net/http's
// redirects for unclean paths and missing trailing slashes would echo the
// query, and with it a token, in Location and in the body.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect && cleanPath(r.URL.EscapedPath()) != r.URL.EscapedPath() {
		h.reject(w, r, nil, fmt.Errorf("%w: the path is not in canonical form", ErrNoRoute))
		return
	}
	hd, pattern := h.mux.Handler(r)
	if pattern == "" || reflect.TypeOf(hd) == redirectType {
		h.reject(w, r, nil, ErrNoRoute)
		return
	}
	h.mux.ServeHTTP(w, r) // the same match, with r's path values set
}

// redirectType is the type of net/http's redirect handlers.
var redirectType = reflect.TypeOf(http.RedirectHandler("/", http.StatusTemporaryRedirect))

// handshake is what a successful handshake hands to the session.
type handshake struct {
	reqID    string
	id       *auth.Identity
	upstream *websocket.Conn
	// upstreamRaw is the upstream's connection under the WebSocket, kept to
	// bound its close handshake.
	upstreamRaw net.Conn
	// Legs wsgate relays itself (relay.go): cw on passthrough and
	// channel-only routes, uw on passthrough routes.
	cw, uw *wire
	// Ping and pong budgets of coder/websocket legs (control.go); wires
	// keep theirs in the pump.
	clientControl, upstreamControl *controlBudget
	subprotocol                    string // selected for the client: the upstream's, or the client's first
	sub                            *bridge.Subscription
	publish                        string
	counted                        bool   // holds a slot in Handler.conns
	unshare                        func() // releases the fleet-wide slots; nil if none

	// Durable routes only: what a resuming client missed.
	recovery *bridge.Recovery
	replay   *bridge.ReplayCursor
}

// release undoes a handshake whose client was never accepted.
func (h *Handler) release(hs *handshake, reason string) {
	if hs.counted {
		h.conns.release(hs.id.User, hs.id.Tenant)
		hs.counted = false
	}
	if hs.unshare != nil {
		hs.unshare()
		hs.unshare = nil
	}
	if hs.sub != nil {
		hs.sub.Close()
	}
	if hs.upstream != nil {
		closeBounded(hs.upstream, hs.upstreamRaw, websocket.StatusGoingAway, reason, closeHandshakeTimeout)
	}
	if hs.uw != nil {
		hs.uw.closeUnread(websocket.StatusGoingAway, reason)
	}
}

func (h *Handler) serve(rt *route, w http.ResponseWriter, r *http.Request) {
	if err := rt.checkParams(r); err != nil {
		h.reject(w, r, rt, err)
		return
	}
	if rt.firstMessage() { // the token comes after the upgrade (firstmessage.go)
		h.serveFirstMessage(rt, w, r)
		return
	}
	start := time.Now()
	r = h.startTrace(r, rt) // tracing hook (trace.go): session and handshake spans
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Limits.HandshakeTimeout)
	hs, err := h.handshake(ctx, rt, r)
	cancel()
	if err != nil {
		h.reject(w, r, rt, err)
		return
	}
	var client *websocket.Conn
	var clientRaw net.Conn
	if rt.cfg.Upstream == "" {
		// No upstream picks a subprotocol: take the client's first (not the
		// token carrier), as browsers fail a handshake that selects none of
		// those they offered.
		if offered := h.verifier.Subprotocols(r.Header); len(offered) > 0 {
			hs.subprotocol = offered[0]
		}
	}
	if rt.wireClient() {
		clientRaw, err = h.acceptWire(w, r, hs)
	} else {
		client, clientRaw, err = h.acceptConn(w, r, hs)
	}
	if err != nil {
		// The client has been answered, or its connection is gone.
		h.metrics.handshakes.WithLabelValues(rt.cfg.Path, "accept_failed").Inc()
		traceRejected(r.Context(), 0, err) // tracing hook (trace.go)
		h.release(hs, "client handshake failed")
		return
	}
	h.startSession(rt, r, hs, client, clientRaw, start)
}

// startSession counts an accepted handshake and runs its session on a
// goroutine the Handler owns (Drain waits for it).
func (h *Handler) startSession(rt *route, r *http.Request, hs *handshake, client *websocket.Conn, clientRaw net.Conn, start time.Time) {
	h.metrics.handshakes.WithLabelValues(rt.cfg.Path, "ok").Inc()
	h.metrics.handshakeSeconds.WithLabelValues(rt.cfg.Path).Observe(time.Since(start).Seconds())
	s := h.newSession(rt, r, hs, client, clientRaw)
	if s == nil {
		return // drain began during the handshake; both legs closed with 1001
	}
	s.open()
	go s.run()
}

// acceptConn completes the client handshake through coder/websocket, for
// routes whose messages wsgate reads (channels).
func (h *Handler) acceptConn(w http.ResponseWriter, r *http.Request, hs *handshake) (*websocket.Conn, net.Conn, error) {
	opts := &websocket.AcceptOptions{
		InsecureSkipVerify: true, // Origin was checked against allowed_origins above
		CompressionMode:    websocket.CompressionDisabled,
	}
	if hs.upstream != nil {
		hs.subprotocol = hs.upstream.Subprotocol()
	}
	if hs.subprotocol != "" {
		opts.Subprotocols = []string{hs.subprotocol}
	}
	opts.OnPingReceived, opts.OnPongReceived = hs.budgetControl(h, sideClient)
	hj := &hijackRecorder{ResponseWriter: w}
	client, err := websocket.Accept(hj, r, opts)
	if err != nil {
		return nil, nil, err // Accept has answered the client already
	}
	return client, hj.conn, nil
}

// acceptWire completes the client handshake itself on routes whose client
// leg is a wire (route.wireClient; isUpgrade checked the request): the 101
// goes out on the hijacked connection, which becomes the client wire.
func (h *Handler) acceptWire(w http.ResponseWriter, r *http.Request, hs *handshake) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return nil, err
	}
	conn.SetDeadline(time.Time{}) // net/http's header and handshake deadlines
	var pending []byte
	if n := brw.Reader.Buffered(); n > 0 {
		pending, _ = brw.Reader.Peek(n) // frames sent right behind the request
	}
	resp := make([]byte, 0, 256)
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = append(resp, acceptKey(r.Header.Get("Sec-WebSocket-Key"))...)
	if hs.subprotocol != "" {
		resp = append(resp, "\r\nSec-WebSocket-Protocol: "...)
		resp = append(resp, hs.subprotocol...)
	}
	resp = append(resp, "\r\n\r\n"...)
	conn.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
	if _, err := conn.Write(resp); err != nil {
		conn.Close()
		return nil, err
	}
	hs.cw = newWire(conn, pending, true)
	return conn, nil
}

// hijackRecorder keeps the connection websocket.Accept hijacks, so that a
// close handshake the client never finishes can be cut short.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (w *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	w.conn = c
	return c, brw, err
}

// admit runs the checks that come before a token: draining, the upgrade
// headers, Origin, and the per-IP handshake rate.
func (h *Handler) admit(ctx context.Context, r *http.Request) error {
	switch {
	case h.draining.Load():
		return ErrDraining
	case !isUpgrade(r):
		return ErrNotWebSocket
	case !h.origins.allowed(r, requestScheme(r, h.peerTrusted(r))):
		return ErrOrigin
	}
	return h.allowIP(ctx, r)
}

// handshake runs every check in order (origin, token, claims, bridge,
// upstream dial) and returns the first failure.
func (h *Handler) handshake(ctx context.Context, rt *route, r *http.Request) (_ *handshake, err error) {
	// A first-message client passed admit at its upgrade (firstmessage.go);
	// only a drain begun since refuses it now.
	if preauthed(ctx) {
		if h.draining.Load() {
			return nil, ErrDraining
		}
	} else if err := h.admit(ctx, r); err != nil {
		return nil, err
	}
	lim := &h.cfg.Limits
	raw, err := h.credential(ctx, r) // a ticket, a first message's token, or Extract (ticket.go)
	if err != nil {
		return nil, err
	}
	id, err := h.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	traceEvent(ctx, "token_verified") // tracing hook (trace.go)
	user := userKey(id.Tenant, id.User)
	if err := h.allowUser(ctx, user); err != nil {
		return nil, err
	}
	if rt.cfg.History != nil && r.URL.Query().Has(SinceParam) {
		// A resume reads history: it costs a second handshake token.
		if err := h.allowUser(ctx, user); err != nil {
			return nil, fmt.Errorf("%w: a resume costs a second token", err)
		}
	}
	hs := &handshake{reqID: requestID(r), id: id}
	for param, claim := range rt.cfg.Require {
		if !contains(id.ClaimValues(claim), r.PathValue(param)) {
			return nil, fmt.Errorf("%w: {%s} is not in claim %s", ErrForbidden, param, claim)
		}
	}
	if err := h.conns.acquire(&h.cfg.Limits, id.User, id.Tenant); err != nil {
		return nil, err
	}
	hs.counted = true
	defer func() {
		if err != nil {
			h.release(hs, "")
		}
	}()
	if h.shared != nil {
		keys := []string{"user:" + user, "tenant:" + id.Tenant}
		caps := []int{lim.MaxConnectionsPerUser, lim.MaxConnectionsPerTenant}
		if id.Tenant == "" {
			caps[1] = 0
		}
		if hs.unshare, err = h.shared.Acquire(ctx, keys, caps); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUserLimit, err)
		}
	}
	if rt.bridged() {
		value := func(name string) (string, bool) { return identityValue(r, id, name) }
		var channels []string
		for _, t := range rt.subscribe {
			ch, err := t.expandChannel(value)
			if err != nil {
				return nil, channelError(err)
			}
			channels = append(channels, ch)
		}
		if rt.cfg.Publish != "" {
			if hs.publish, err = rt.publish.expandChannel(value); err != nil {
				return nil, channelError(err)
			}
		}
		if !h.hub.Ready() {
			return nil, bridge.ErrUnavailable
		}
		if len(channels) > 0 {
			// Subscribed before the upgrade: nothing published after the
			// client sees "open" is missed, and a Redis failure is a 503.
			if hs.sub, err = h.hub.Subscribe(ctx, channels, h.cfg.SubscriberQueue); err != nil {
				return nil, err
			}
			traceEvent(ctx, "subscribed", attribute.Int("wsgate.channels", len(channels))) // tracing hook (trace.go)
			if rt.cfg.History != nil {
				if err := h.resume(ctx, r, hs, channels[0]); err != nil {
					return nil, err
				}
			}
		}
	}
	if rt.cfg.Upstream != "" {
		if h.dials != nil {
			select {
			case h.dials <- struct{}{}:
				defer func() { <-h.dials }()
			default:
				return nil, fmt.Errorf("%w: too many upstream dials in flight", ErrCapacity)
			}
		}
		if err = h.dial(ctx, r, rt, raw, id, hs); err != nil {
			return nil, err
		}
	}
	return hs, nil
}

// identityValue resolves a channel placeholder.
func identityValue(r *http.Request, id *auth.Identity, name string) (string, bool) {
	switch {
	case name == "user":
		return id.User, true
	case name == "tenant":
		return id.Tenant, id.Tenant != ""
	case strings.HasPrefix(name, "claims."):
		vals := id.ClaimValues(name[len("claims."):])
		if len(vals) != 1 {
			return "", false
		}
		return vals[0], true
	}
	v := r.PathValue(name)
	return v, v != ""
}

// reject answers a failed handshake. The body names the reason (never the
// token); 401s carry WWW-Authenticate as RFC 6750 asks.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, rt *route, err error) {
	status := statusFor(err)
	routeName := ""
	if rt != nil {
		routeName = rt.cfg.Path
	}
	result := resultFor(status)
	var ue *UpstreamError
	if errors.As(err, &ue) {
		result = "upstream_rejected"
	}
	h.metrics.handshakes.WithLabelValues(routeName, result).Inc()
	traceRejected(r.Context(), status, err) // tracing hook (trace.go)
	if ce := h.log.Check(zap.InfoLevel, "handshake_rejected"); ce != nil {
		ce.Write(zap.String("route", routeName), zap.String("path", r.URL.Path), zap.Int("status", status),
			zap.String("remote", r.RemoteAddr), zap.String("reason", err.Error()))
	}
	hdr := w.Header()
	switch status {
	case http.StatusUnauthorized:
		hdr.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	case http.StatusUpgradeRequired:
		hdr.Set("Upgrade", "websocket")
		hdr.Set("Sec-WebSocket-Version", "13")
	case http.StatusServiceUnavailable:
		hdr.Set("Retry-After", "1")
	}
	hdr.Set("Connection", "close")
	http.Error(w, http.StatusText(status)+": "+err.Error(), status)
}

// isUpgrade checks the RFC 6455 §4.2.1 handshake fields, so a request that
// would fail websocket.Accept is refused before an upstream is dialled.
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket") &&
		r.Header.Get("Sec-WebSocket-Version") == "13" &&
		len(r.Header.Get("Sec-WebSocket-Key")) == 24
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// requestID keeps a sane client X-Request-Id or makes one.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 128 && printableASCII(id) {
		return id
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// peerTrusted reports whether the connection's peer is a trusted proxy
// (limits.trusted_proxies), whose X-Forwarded-* headers wsgate believes.
func (h *Handler) peerTrusted(r *http.Request) bool {
	ip := net.ParseIP(clientIP(r))
	return ip != nil && inNets(ip, h.trusted)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Drain stops new upgrades and closes every open connection with 1001,
// spreading the closes over ShutdownGrace so clients do not all reconnect
// in the same second. It returns when all connections are closed, or
// closes the rest at once when ctx ends.
func (h *Handler) Drain(ctx context.Context) {
	h.obs.markDrain(time.Now()) // observability hook (observe.go): drain progress gauges
	h.draining.Store(true)
	h.stopPending() // sockets waiting for a first message get 1001 now
	h.mu.Lock()
	all := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		all = append(all, s)
	}
	h.mu.Unlock()

	window := h.cfg.ShutdownGrace * 4 / 5 // leave time for close handshakes
	for i, s := range all {
		delay := time.Duration(0)
		if len(all) > 1 {
			delay = window * time.Duration(i) / time.Duration(len(all)-1)
		}
		s.scheduleDrain(delay)
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		h.mu.Lock()
		left := make([]*session, 0, len(h.sessions))
		for s := range h.sessions {
			left = append(left, s)
		}
		h.mu.Unlock()
		for _, s := range left {
			s.abort() // outside mu: CloseNow may wait on a close in progress
		}
		<-done
	}
}

// Draining reports whether Drain has begun.
func (h *Handler) Draining() bool { return h.draining.Load() }

// Active returns the number of open connections.
func (h *Handler) Active() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}
