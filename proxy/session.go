package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/closecode"
)

// Sides of a connection, for logs and the closes metric.
const (
	sideClient   = closecode.ByClient
	sideUpstream = closecode.ByUpstream
)

// session is one accepted client and its upstream leg and/or subscription.
// run owns every goroutine of the session and returns after all have ended
// and both legs are closed; finish, at its end, stops the session's timers
// and waits for any callback still running.
type session struct {
	// Static after newSession.
	h        *Handler
	rt       *route
	client   leg
	upstream leg // nil on channel-only routes
	// readers start the session's pumps, chosen with the transport in
	// newSession. Each returns at once; the pump calls readerDone when it
	// stops.
	readers     []func()
	subprotocol string
	sub         *bridge.Subscription // nil without subscriptions
	recovery    *bridge.Recovery     // non-nil when a durable client resumes
	unshare     func()               // releases fleet-wide limit slots; may be nil
	replay      *bridge.ReplayCursor
	publish     string // channel for client messages, or ""
	id          *auth.Identity
	reqID       string
	remote      string
	start       time.Time
	ctx         context.Context // ends when the session starts closing; bounds pings and publishes
	cancel      context.CancelFunc

	// Owned by the client's reader.
	msgRate bucket

	msgs  [numDirections]atomic.Int64
	bytes [numDirections]atomic.Int64

	// Observability (observe.go, trace.go): message sizes per direction,
	// allocated on the first message; folded (guarded by Handler.mu) once
	// recordEnd moved them to the ended sum; the connection's spans or nil.
	sizes  [numDirections]atomic.Pointer[sizeCounts]
	folded bool
	trace  *sessionTrace

	closing   atomic.Bool
	closingCh chan struct{} // closed with closing
	closeOnce sync.Once
	closed    chan struct{}   // closed when both legs are closed
	ended     closecode.Event // set once in closeOnce, read after closed
	// live counts the pumps still running and closeLegs; whoever ends last
	// runs finish.
	live atomic.Int32

	// The session's timers (expiry, heartbeat, drain). Guarded by tmu.
	tmu           sync.Mutex
	timers        []*time.Timer
	beatTimer     *time.Timer
	timersStopped bool
	timerCalls    sync.WaitGroup // callbacks running
}

func (h *Handler) newSession(rt *route, r *http.Request, hs *handshake, client *websocket.Conn, clientRaw net.Conn) *session {
	if client != nil {
		client.SetReadLimit(h.cfg.MaxMessageBytes)
	}
	s := &session{
		h:           h,
		rt:          rt,
		sub:         hs.sub,
		recovery:    hs.recovery,
		unshare:     hs.unshare,
		replay:      hs.replay,
		publish:     hs.publish,
		id:          hs.id,
		subprotocol: hs.subprotocol,
		trace:       acceptedTrace(r, hs), // tracing hook (trace.go): ends the handshake span
		start:       time.Now(),
		closed:      make(chan struct{}),
		closingCh:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.reqID, s.remote = hs.reqID, r.RemoteAddr
	for _, c := range []*controlBudget{hs.clientControl, hs.upstreamControl} {
		if c != nil {
			c.s = s
		}
	}
	// The transport is chosen here, once: the legs and the pumps between them.
	if hs.cw != nil {
		s.client = hs.cw
		s.readers = append(s.readers, newRelayPump(s, clientToUpstream, hs.cw, hs.uw, sideClient).start)
		if hs.uw != nil {
			s.upstream = hs.uw
			s.readers = append(s.readers, newRelayPump(s, upstreamToClient, hs.uw, hs.cw, sideUpstream).start)
		}
	} else {
		s.client = newConnLeg(client, clientRaw)
		p := newMsgPumps(s, client, hs.upstream)
		s.readers = append(s.readers, s.goRead(p.clientToUpstream))
		if hs.upstream != nil {
			s.upstream = newConnLeg(hs.upstream, hs.upstreamRaw)
			s.readers = append(s.readers, s.goRead(p.upstreamToClient))
		}
	}
	if s.sub != nil {
		s.readers = append(s.readers, newChannelPump(s).start)
	}
	s.live.Store(int32(len(s.readers)) + 1) // + closeLegs

	h.mu.Lock()
	if h.draining.Load() {
		h.mu.Unlock()
		ev := closecode.ServerShutdown
		if hs.cw != nil {
			hs.cw.closeUnread(ev.Client, ev.Reason)
		} else {
			s.closeLegs(ev)
		}
		h.release(hs, ev.Reason) // the upstream leg if still open, slots, subscription

		s.trace.abandon(ev.Reason) // tracing hook (trace.go)
		return nil
	}
	h.sessions[s] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	return s
}

// open counts and logs the session and arms its timers. It runs on the
// HTTP handler's goroutine, which is about to end, so that no pump's
// goroutine grows its stack for a log line.
func (s *session) open() {
	s.h.metrics.active.WithLabelValues(s.rt.cfg.Path).Inc()
	if ce := s.h.log.Check(zap.InfoLevel, "connection_opened"); ce != nil {
		ce.Write(append(s.logFields(), zap.String("subprotocol", s.subprotocol))...)
	}
	s.armTimers()
}

// run starts the session's pumps and returns. The last of them to stop,
// or closeLegs, whichever ends last, logs and unregisters the session.
func (s *session) run() {
	for _, start := range s.readers {
		start()
	}
}

// goRead is a reader start that runs read on a goroutine of its own.
func (s *session) goRead(read func()) func() {
	return func() {
		go func() {
			defer s.readerDone()
			read()
		}()
	}
}

// readerDone counts one pump (or closeLegs) ended; the last runs finish.
func (s *session) readerDone() {
	if s.live.Add(-1) == 0 {
		s.finish()
	}
}

// finish counts, logs and unregisters the ended session, on the goroutine
// of whichever pump (or closeLegs) ended last. It is its own function so
// that the frames of the pumps that call it through readerDone stay small
// (the log line's fields would make it 1 KiB).
//
//go:noinline
func (s *session) finish() {
	h := s.h
	s.stopTimers()
	if s.sub != nil {
		s.sub.Close()
	}

	h.metrics.active.WithLabelValues(s.rt.cfg.Path).Dec()
	h.metrics.closes.WithLabelValues(s.rt.cfg.Path, codeLabel(s.ended.Client), string(s.ended.By)).Inc()
	if ce := h.log.Check(zap.InfoLevel, "connection_closed"); ce != nil {
		ce.Write(append(s.logFields(),
			zap.Duration("duration", time.Since(s.start)),
			zap.Int64("msgs_in", s.msgs[clientToUpstream].Load()+s.msgs[clientToChannel].Load()),
			zap.Int64("msgs_out", s.msgs[upstreamToClient].Load()+s.msgs[channelToClient].Load()),
			zap.Int64("bytes_in", s.bytes[clientToUpstream].Load()+s.bytes[clientToChannel].Load()),
			zap.Int64("bytes_out", s.bytes[upstreamToClient].Load()+s.bytes[channelToClient].Load()),
			zap.Int("client_close_code", int(s.ended.Client)),
			zap.Int("upstream_close_code", int(s.ended.Upstream)),
			zap.String("closed_by", string(s.ended.By)))...)
	}
	s.recordEnd() // observability hook (observe.go): session span, duration and size histograms

	h.conns.release(s.id.User, s.id.Tenant)
	if s.unshare != nil {
		s.unshare()
	}
	h.mu.Lock()
	delete(h.sessions, s)
	t := h.ended[s.rt.cfg.Path]
	if t == nil {
		t = new([numDirections][2]int64)
		h.ended[s.rt.cfg.Path] = t
	}
	for d := direction(0); d < numDirections; d++ {
		t[d][0] += s.msgs[d].Load()
		t[d][1] += s.bytes[d].Load()
	}
	h.mu.Unlock()
	h.wg.Done()
}

// logFields identify the connection in its log lines. They are built when
// a line is written rather than held per connection (a zap.Logger.With
// would keep an encoded copy alive for the socket's lifetime).
func (s *session) logFields() []zap.Field {
	return s.trace.withTraceID([]zap.Field{zap.String("request_id", s.reqID), zap.String("route", s.rt.cfg.Path), // tracing hook (trace.go)
		zap.String("user", s.id.User), zap.String("tenant", s.id.Tenant), zap.String("remote", s.remote)})
}

func (s *session) count(d direction, n int) {
	s.msgs[d].Add(1)
	s.bytes[d].Add(int64(n))
	s.observeSize(d, n) // observability hook (observe.go): message size histogram
}

// writeFailed ends the session after a write to the leg on side failed: a
// timeout drops that peer (it stopped reading); another error is left to
// the peer's reader, which knows why.
func (s *session) writeFailed(side closecode.Side, err error) {
	switch {
	case errors.Is(err, errWireClosed): // the session is closing already
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.raise(s.writeTimeout(side))
	default:
		s.peerWriteFailed(side)
	}
}

// writeTimeout is the event for a write to side that overran write_timeout.
func (s *session) writeTimeout(side closecode.Side) closecode.Event {
	switch {
	case side == sideUpstream:
		return closecode.UpstreamWriteTimeout
	case s.sub != nil && errors.Is(s.sub.Err(), bridge.ErrSlowConsumer):
		return closecode.SlowConsumerDropped
	}
	return closecode.ClientWriteTimeout
}

// peerWriteFailed waits briefly for the peer's reader to report why the
// peer is gone, then treats it as vanished.
func (s *session) peerWriteFailed(peer closecode.Side) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-s.closingCh:
	case <-t.C:
		s.legEnded(peer, io.EOF)
	}
}

// legEnded turns the error that ended a read or write into closes of both legs.
func (s *session) legEnded(side closecode.Side, err error) {
	if s.closing.Load() {
		return // the session is already closing; this error is its echo
	}
	s.raise(legEvent(side, err))
}

// legEvent is the event for the error that ended side's read. The wire
// relay and coder/websocket report the same failures alike.
func legEvent(side closecode.Side, err error) closecode.Event {
	var ce websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrMessageTooBig) && side == sideClient:
		return closecode.ClientTooBig // coder/websocket has sent the sender 1009 already
	case errors.Is(err, websocket.ErrMessageTooBig):
		return closecode.UpstreamTooBig
	case errors.As(err, &ce) && side == sideClient:
		return closecode.ClientClosed(ce.Code, ce.Reason)
	case errors.As(err, &ce):
		return closecode.UpstreamClosed(ce.Code, ce.Reason)
	case brokeProtocol(err) && side == sideClient:
		// The library rejected a frame. It has sent 1002 itself, except for
		// an unmasked client frame, where it sends nothing: the event does.
		return closecode.ClientProtocolError
	case brokeProtocol(err):
		return closecode.UpstreamProtocolError
	case side == sideClient:
		return closecode.ClientGone
	}
	return closecode.UpstreamGone
}

// brokeProtocol tells a read error caused by the peer's bytes from one
// caused by the connection going away.
func brokeProtocol(err error) bool {
	var perr errProtocol
	if errors.As(err, &perr) {
		return true
	}
	return !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) &&
		!errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, context.Canceled)
}

// raise ends the session for ev, once: both legs are closed with the codes
// and reason ev gives them, whatever the route kind. Every close decision
// goes through here.
func (s *session) raise(ev closecode.Event) {
	s.closeOnce.Do(func() {
		s.ended = ev
		s.closing.Store(true)
		close(s.closingCh)
		s.cancel() // pings and publishes in flight
		if s.sub != nil {
			s.sub.Close() // ends the channel pump (delivery.go)
		}
		go s.closeLegs(ev)
	})
}

// closeLegs runs both close handshakes at once, each bounded (ev.Brief
// gets brokenPeerTimeout), then releases run.
func (s *session) closeLegs(ev closecode.Event) {
	defer s.readerDone() // after closed: a session that never ran never reaches 0
	defer close(s.closed)
	defer s.cancel()
	within := func(side closecode.Side) time.Duration {
		if side == ev.Brief {
			return brokenPeerTimeout
		}
		return closeHandshakeTimeout
	}
	var wg sync.WaitGroup
	if s.upstream != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.upstream.closeHandshake(ev.Upstream, ev.Reason, within(sideUpstream), ev.Brief == sideUpstream)
		}()
	}
	s.client.closeHandshake(ev.Client, ev.Reason, within(sideClient), ev.Brief == sideClient)
	wg.Wait()
}

// abort drops both legs without close handshakes (Drain's deadline passed).
func (s *session) abort() {
	s.raise(closecode.ServerShutdown)
	s.client.drop()
	if s.upstream != nil {
		s.upstream.drop()
	}
}

// afterFunc runs f after d as one of the session's timers. Call with tmu
// held. finish stops every timer and waits for callbacks already running.
func (s *session) afterFunc(d time.Duration, f func()) *time.Timer {
	t := time.AfterFunc(d, func() {
		s.tmu.Lock()
		if s.timersStopped {
			s.tmu.Unlock()
			return
		}
		s.timerCalls.Add(1)
		s.tmu.Unlock()
		defer s.timerCalls.Done()
		f()
	})
	s.timers = append(s.timers, t)
	return t
}

// stopTimers stops the session's timers and waits for their callbacks.
func (s *session) stopTimers() {
	s.tmu.Lock()
	s.timersStopped = true
	for _, t := range s.timers {
		t.Stop()
	}
	s.tmu.Unlock()
	s.timerCalls.Wait()
}

// armTimers starts the heartbeat and the token-expiry close. Timers hold no
// goroutine while they wait.
func (s *session) armTimers() {
	until := time.Until(s.id.Expiry.Add(s.h.verifier.Leeway()))
	s.tmu.Lock()
	defer s.tmu.Unlock()
	s.afterFunc(until, func() { s.raise(closecode.TokenExpiry) })
	s.beatTimer = s.afterFunc(s.h.cfg.HeartbeatInterval, s.beat)
}

// beat is the heartbeat timer's callback: it pings, and arms the next beat
// once this one is answered.
func (s *session) beat() {
	if !s.heartbeat() {
		return
	}
	s.tmu.Lock()
	if !s.timersStopped {
		s.beatTimer.Reset(s.h.cfg.HeartbeatInterval)
	}
	s.tmu.Unlock()
}

// heartbeat pings both legs at once and closes the session if either fails
// to answer within HeartbeatTimeout. It reports whether to ping again.
func (s *session) heartbeat() bool {
	ctx, cancel := context.WithTimeout(s.ctx, s.h.cfg.HeartbeatTimeout)
	defer cancel()
	upErr := make(chan error, 1)
	if s.upstream != nil {
		go func() { upErr <- s.upstream.ping(ctx) }()
	} else {
		upErr <- nil
	}
	clientErr := s.client.ping(ctx)
	uerr := <-upErr
	switch {
	case s.closing.Load():
		return false
	case uerr != nil:
		s.raise(closecode.UpstreamHeartbeat)
		return false
	case clientErr != nil:
		s.raise(closecode.ClientHeartbeat)
		return false
	}
	return true
}

// scheduleDrain closes the session with 1001 after delay.
func (s *session) scheduleDrain(delay time.Duration) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if !s.timersStopped {
		s.afterFunc(delay, func() { s.raise(closecode.ServerShutdown) })
	}
}
