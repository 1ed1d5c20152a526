package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
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

// msgPumps is the per-direction state of sessions whose legs are
// coder/websocket Conns.
type msgPumps struct {
	// Owned by the goroutine writing in that direction; each bounds one
	// write to WriteTimeout without allocating per message.
	writeTimers [numDirections]*time.Timer
	// Owned by the goroutine reading in that direction: tells a failed read
	// of the source from a failed write to the peer.
	sources [numDirections]sourceReader
}

// session is one accepted client and its upstream leg and/or subscription.
// run owns every goroutine of the session and returns after all have ended
// and both legs are closed.
type session struct {
	// Static after newSession.
	h        *Handler
	rt       *route
	client   *websocket.Conn
	upstream *websocket.Conn // nil on bridge-only routes
	// The connections under client and upstream (nil if unknown): dropped
	// outright when a close handshake overruns its bound.
	clientRaw, upstreamRaw net.Conn
	// Legs wsgate relays itself (relay.go), in place of client and upstream:
	// cw on passthrough and channel-only routes, uw on passthrough routes.
	cw, uw      *wire
	subprotocol string
	sub         *bridge.Subscription // nil without subscriptions
	recovery    *bridge.Recovery     // non-nil when a durable client resumes
	unshare     func()               // releases fleet-wide limit slots; may be nil
	replay      []*bridge.Message
	publish     string // channel for client messages, or ""
	id          *auth.Identity
	reqID       string
	remote      string
	start       time.Time
	ctx         context.Context // ends once both legs are closed; bounds pings and publishes
	cancel      context.CancelFunc

	// Owned by the client's reader.
	msgRate bucket
	// Message pumps through coder/websocket (nil on wire sessions).
	pumps *msgPumps

	msgs  [numDirections]atomic.Int64
	bytes [numDirections]atomic.Int64

	closing   atomic.Bool
	closingCh chan struct{} // closed with closing
	closeOnce sync.Once
	closed    chan struct{}   // closed when both legs are closed
	ended     closecode.Event // set once in closeOnce, read after closed

	timers []*time.Timer // heartbeat, expiry, drain; stopped when run ends
	tmu    sync.Mutex    // guards timers
}

func (h *Handler) newSession(rt *route, r *http.Request, hs *handshake, client *websocket.Conn, clientRaw net.Conn) *session {
	if client != nil {
		client.SetReadLimit(h.cfg.MaxMessageBytes)
	}
	s := &session{
		h:           h,
		rt:          rt,
		client:      client,
		clientRaw:   clientRaw,
		upstream:    hs.upstream,
		upstreamRaw: hs.upstreamRaw,
		sub:         hs.sub,
		recovery:    hs.recovery,
		unshare:     hs.unshare,
		replay:      hs.replay,
		publish:     hs.publish,
		id:          hs.id,
		cw:          hs.cw,
		uw:          hs.uw,
		subprotocol: hs.subprotocol,
		start:       time.Now(),
		closed:      make(chan struct{}),
		closingCh:   make(chan struct{}),
	}
	if s.cw == nil { // wire sessions publish nothing and ping without a context
		s.pumps = new(msgPumps)
		s.ctx, s.cancel = context.WithCancel(context.Background())
	} else {
		s.ctx, s.cancel = context.Background(), func() {}
	}
	s.reqID, s.remote = hs.reqID, r.RemoteAddr
	for _, c := range []*controlBudget{hs.clientControl, hs.upstreamControl} {
		if c != nil {
			c.s = s
		}
	}

	h.mu.Lock()
	if h.draining.Load() {
		h.mu.Unlock()
		ev := closecode.ServerShutdown
		if s.cw != nil {
			s.cw.closeUnread(ev.Client, ev.Reason)
		} else {
			s.closeLegs(ev)
		}
		h.release(hs, ev.Reason) // the upstream leg if still open, slots, subscription
		return nil
	}
	h.sessions[s] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	return s
}

// open counts and logs the session and arms its timers. It runs on the
// HTTP handler's goroutine, which is about to end, so that run's goroutine,
// alive for the socket's lifetime, never grows its stack for a log line.
func (s *session) open() {
	s.h.metrics.active.WithLabelValues(s.rt.cfg.Path).Inc()
	if ce := s.h.log.Check(zap.InfoLevel, "connection_opened"); ce != nil {
		ce.Write(append(s.logFields(), zap.String("subprotocol", s.subprotocol))...)
	}
	s.armTimers()
}

// run pumps until the session ends, then logs and unregisters it.
func (s *session) run() {
	var wg sync.WaitGroup
	switch {
	case s.cw != nil:
		if s.uw != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.pump(upstreamToClient, s.uw, s.cw, sideUpstream)
			}()
		}
		if s.sub != nil {
			wg.Add(1)
			go s.channelToClient(&wg)
		}
		s.pump(clientToUpstream, s.cw, s.uw, sideClient)
	default:
		if s.upstream != nil {
			wg.Add(1)
			go s.upstreamToClient(&wg)
		}
		if s.sub != nil {
			wg.Add(1)
			go s.channelToClient(&wg)
		}
		s.clientReadLoop()
	}
	wg.Wait()
	<-s.closed
	s.finish()
}

// finish counts, logs and unregisters the ended session. It is its own
// function so that run's frame, parked under the pump for the socket's
// whole life, stays small (the log line's fields would make it 1 KiB).
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
	return []zap.Field{zap.String("request_id", s.reqID), zap.String("route", s.rt.cfg.Path),
		zap.String("user", s.id.User), zap.String("tenant", s.id.Tenant), zap.String("remote", s.remote)}
}

// clientReadLoop carries client messages to the upstream and/or the publish
// channel. It runs on the HTTP handler's goroutine.
func (s *session) clientReadLoop() {
	for {
		// Readers take a context that never ends: the library arms a timer per
		// read for a cancellable one, and legs end by being closed anyway.
		typ, r, err := s.client.Reader(context.Background())
		if err != nil {
			s.legEnded(sideClient, err)
			return
		}
		if rate := s.h.cfg.Limits.MessagesPerSecond; rate > 0 && !s.msgRate.take(time.Now(), rate) {
			s.raise(closecode.MessageRate)
			return
		}
		switch {
		case s.publish != "":
			err = s.publishMessage(typ, r)
		case s.upstream != nil:
			err = s.copyMessage(s.upstream, clientToUpstream, typ, r)
		default:
			s.raise(closecode.ClientMessagesRefused)
			return
		}
		if err != nil {
			s.readOrWriteFailed(sideClient, sideUpstream, err)
			return
		}
	}
}

// upstreamToClient carries upstream messages to the client.
func (s *session) upstreamToClient(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		typ, r, err := s.upstream.Reader(context.Background())
		if err != nil {
			s.legEnded(sideUpstream, err)
			return
		}
		if err := s.copyMessage(s.client, upstreamToClient, typ, r); err != nil {
			s.readOrWriteFailed(sideUpstream, sideClient, err)
			return
		}
	}
}

// channelToClient delivers subscription messages to the client in order.
// Every message already queued when it wakes goes out in one batch (one
// writev on a wire client).
func (s *session) channelToClient(wg *sync.WaitGroup) {
	defer wg.Done()
	var last bridge.Position // durable routes: the last position delivered
	if s.recovery != nil {
		var err error
		if last, err = s.sendReplay(s.recovery, s.replay); err != nil {
			return
		}
		s.replay = nil
	}
	durable := s.rt.cfg.History != nil
	var arr [maxBatch]delivery
	c := s.sub.C()
	for m := range c {
		batch := arr[:0]
		for open := true; open; {
			if durable && m.Envelope != nil {
				if last.Epoch != "" && m.Pos.Epoch == last.Epoch && !m.Pos.After(last) {
					m = nil // already replayed
				} else if m.Pos.Epoch != "" {
					last = m.Pos
				}
			}
			if m != nil {
				batch = append(batch, toDelivery(m, durable))
			}
			if len(batch) == maxBatch {
				break
			}
			select {
			case m, open = <-c:
			default:
				open = false
			}
		}
		if len(batch) > 0 && s.deliver(batch) != nil {
			return
		}
	}
	switch err := s.sub.Err(); {
	case errors.Is(err, bridge.ErrSlowConsumer):
		s.raise(closecode.SlowConsumerDropped)
	case errors.Is(err, bridge.ErrGap):
		s.raise(closecode.SubscriptionLost)
	}
}

// toDelivery is how m goes to a client: its envelope on a durable route,
// else its payload, as text unless it is not UTF-8.
func toDelivery(m *bridge.Message, durable bool) delivery {
	if durable && m.Envelope != nil {
		return delivery{payload: m.Envelope}
	}
	return delivery{binary: m.Binary, payload: m.Payload}
}

// deliver writes batch to the client and counts it. A failed write ends
// the session (or leaves that to the reader that knows why).
func (s *session) deliver(batch []delivery) error {
	if s.cw != nil {
		if err := s.cw.writeMessages(batch, s.h.cfg.WriteTimeout); err != nil {
			s.wireWriteFailed(sideClient, err)
			return err
		}
		for _, d := range batch {
			s.count(channelToClient, len(d.payload))
		}
		return nil
	}
	for _, d := range batch {
		typ := websocket.MessageText
		if d.binary {
			typ = websocket.MessageBinary
		}
		if err := s.writeTimed(s.client, channelToClient, func(ctx context.Context) error { return s.client.Write(ctx, typ, d.payload) }); err != nil {
			s.peerWriteFailed(sideClient)
			return err
		}
		s.count(channelToClient, len(d.payload))
	}
	return nil
}

func (s *session) publishMessage(typ websocket.MessageType, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.h.hub.Publish(s.ctx, s.publish, b); err != nil {
		s.raise(closecode.PublishFailed)
		return err
	}
	s.count(clientToChannel, len(b))
	if s.upstream != nil {
		err := s.writeTimed(s.upstream, clientToUpstream, func(ctx context.Context) error { return s.upstream.Write(ctx, typ, b) })
		if err != nil {
			return &peerWriteError{err}
		}
		s.count(clientToUpstream, len(b))
		return nil
	}
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyMessage streams one message from r to dst. A message that fits one
// buffer is written as a single frame; a larger one is streamed frame by
// frame, so memory stays bounded whatever max_message_bytes is. No buffer
// is held between messages.
func (s *session) copyMessage(dst *websocket.Conn, d direction, typ websocket.MessageType, msg io.Reader) (err error) {
	src := &s.pumps.sources[d]
	src.r, src.err = msg, nil
	r := io.Reader(src)
	defer func() {
		if err != nil && src.err == nil {
			err = &peerWriteError{err} // the read side was fine: the write failed
		}
		src.r = nil
	}()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	n, err := io.ReadFull(r, buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		err = s.writeTimed(dst, d, func(ctx context.Context) error { return dst.Write(ctx, typ, buf[:n]) })
		if err == nil {
			s.count(d, n)
		}
		return err
	case err != nil:
		return err
	}
	total := int64(n)
	err = s.writeTimed(dst, d, func(ctx context.Context) error {
		w, err := dst.Writer(ctx, typ)
		if err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		m, err := io.CopyBuffer(w, r, buf)
		total += m
		if err != nil {
			return err
		}
		return w.Close()
	})
	if err == nil {
		s.count(d, int(total))
	}
	return err
}

// sourceReader records a read error, so a failed copy can be blamed on the
// right leg.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// peerWriteError is a failed write to the leg a message was going to.
type peerWriteError struct{ err error }

func (e *peerWriteError) Error() string { return "write to peer: " + e.err.Error() }
func (e *peerWriteError) Unwrap() error { return e.err }

// readOrWriteFailed ends the session after a copy from src to peer failed:
// a read error is src's doing; a write error is the peer's, whose own
// reader knows why (its close code), so that reader reports it.
func (s *session) readOrWriteFailed(src, peer closecode.Side, err error) {
	var pw *peerWriteError
	if errors.As(err, &pw) {
		s.peerWriteFailed(peer)
		return
	}
	s.legEnded(src, err)
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

// writeTimed runs one write to dst bounded by WriteTimeout. A peer that
// stops reading blocks the write; the timer then drops that peer.
func (s *session) writeTimed(dst *websocket.Conn, d direction, write func(context.Context) error) error {
	t := s.pumps.writeTimers[d]
	if t == nil {
		t = time.AfterFunc(s.h.cfg.WriteTimeout, func() {
			switch {
			case dst == s.upstream:
				s.raise(closecode.UpstreamWriteTimeout)
			case d == channelToClient && errors.Is(s.sub.Err(), bridge.ErrSlowConsumer):
				s.raise(closecode.SlowConsumerDropped)
			default:
				s.raise(closecode.ClientWriteTimeout)
			}
			dst.CloseNow()
		})
		s.pumps.writeTimers[d] = t
	} else {
		t.Reset(s.h.cfg.WriteTimeout)
	}
	err := write(context.Background())
	t.Stop()
	return err
}

func (s *session) count(d direction, n int) {
	s.msgs[d].Add(1)
	s.bytes[d].Add(int64(n))
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
		if s.sub != nil {
			s.sub.Close() // ends channelToClient's range over the queue
		}
		go s.closeLegs(ev)
	})
}

// closeLegs runs both close handshakes at once, each bounded (ev.Brief
// gets brokenPeerTimeout), then releases run.
func (s *session) closeLegs(ev closecode.Event) {
	defer close(s.closed)
	defer s.cancel()
	within := func(side closecode.Side) time.Duration {
		if side == ev.Brief {
			return brokenPeerTimeout
		}
		return closeHandshakeTimeout
	}
	var wg sync.WaitGroup
	switch {
	case s.cw != nil:
		if s.uw != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.uw.closeHandshake(ev.Upstream, ev.Reason, within(sideUpstream), ev.Brief == sideUpstream)
			}()
		}
		s.cw.closeHandshake(ev.Client, ev.Reason, within(sideClient), ev.Brief == sideClient)
	case s.upstream != nil:
		wg.Add(1)
		go func() {
			defer wg.Done()
			closeBounded(s.upstream, s.upstreamRaw, ev.Upstream, ev.Reason, within(sideUpstream))
		}()
		fallthrough
	default:
		closeBounded(s.client, s.clientRaw, ev.Client, ev.Reason, within(sideClient))
	}
	wg.Wait()
}

// Bounds on one leg's close handshake.
const (
	closeHandshakeTimeout = 5 * time.Second
	// The stream of a peer that broke the protocol or overran the message
	// limit is garbage from the refused frame on; RFC 6455 §7.1.7 lets an
	// endpoint drop such a connection at once. It gets a moment to read the
	// close frame and answer.
	brokenPeerTimeout = time.Second
)

// closeBounded runs c's close handshake and drops the connection under it
// (raw, if known) once within has passed. coder/websocket bounds its own
// close-frame write and the wait for the answer, but not draining the rest
// of a frame the peer left unfinished, nor parsing the bytes after a frame
// it refused: a peer could hold the handshake, and the session, open forever.
func closeBounded(c *websocket.Conn, raw net.Conn, code websocket.StatusCode, reason string, within time.Duration) {
	if raw != nil {
		t := time.AfterFunc(within, func() { raw.Close() })
		defer t.Stop()
	}
	c.Close(code, reason)
	c.CloseNow()
}

// abort drops both legs without close handshakes (Drain's deadline passed).
func (s *session) abort() {
	s.raise(closecode.ServerShutdown)
	// CloseNow waits for a close handshake in progress; closing the
	// connections underneath ends it.
	for _, raw := range []net.Conn{s.clientRaw, s.upstreamRaw} {
		if raw != nil {
			raw.Close()
		}
	}
	if s.client != nil {
		s.client.CloseNow()
	}
	if s.upstream != nil {
		s.upstream.CloseNow()
	}
}

func (s *session) addTimer(t *time.Timer) {
	s.tmu.Lock()
	s.timers = append(s.timers, t)
	s.tmu.Unlock()
}

func (s *session) stopTimers() {
	s.tmu.Lock()
	for _, t := range s.timers {
		t.Stop()
	}
	s.tmu.Unlock()
	if s.pumps == nil {
		return
	}
	for _, t := range s.pumps.writeTimers {
		if t != nil {
			t.Stop()
		}
	}
}

// armTimers starts the heartbeat and the token-expiry close. Timers hold no
// goroutine while they wait.
func (s *session) armTimers() {
	until := time.Until(s.id.Expiry.Add(s.h.verifier.Leeway()))
	s.addTimer(time.AfterFunc(until, func() {
		s.raise(closecode.TokenExpiry)
	}))
	var beat *time.Timer
	beat = time.AfterFunc(s.h.cfg.HeartbeatInterval, func() {
		if s.heartbeat() {
			beat.Reset(s.h.cfg.HeartbeatInterval)
		}
	})
	s.addTimer(beat)
}

// heartbeat pings both legs at once and closes the session if either fails
// to answer within HeartbeatTimeout. It reports whether to ping again.
func (s *session) heartbeat() bool {
	if s.cw != nil {
		return s.heartbeatWires()
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.h.cfg.HeartbeatTimeout)
	defer cancel()
	upErr := make(chan error, 1)
	if s.upstream != nil {
		go func() { upErr <- s.upstream.Ping(ctx) }()
	} else {
		upErr <- nil
	}
	clientErr := s.client.Ping(ctx)
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
	s.addTimer(time.AfterFunc(delay, func() {
		s.raise(closecode.ServerShutdown)
	}))
}

// heartbeatWires is heartbeat for a passthrough session: each leg's pump
// counts the pongs it reads, and this watches the counts move.
func (s *session) heartbeatWires() bool {
	timeout := s.h.cfg.HeartbeatTimeout
	c0 := s.cw.pongs.Load()
	s.cw.writeControl(opPing, []byte("wsgate"), timeout)
	var u0 uint32
	if s.uw != nil {
		u0 = s.uw.pongs.Load()
		s.uw.writeControl(opPing, []byte("wsgate"), timeout)
	}
	poll := min(timeout/4, 25*time.Millisecond)
	deadline := time.Now().Add(timeout)
	for {
		clientOK := s.cw.pongs.Load() != c0
		upOK := s.uw == nil || s.uw.pongs.Load() != u0
		switch {
		case s.closing.Load():
			return false
		case clientOK && upOK:
			return true
		case time.Now().After(deadline):
			if !upOK {
				s.raise(closecode.UpstreamHeartbeat)
			} else {
				s.raise(closecode.ClientHeartbeat)
			}
			return false
		}
		time.Sleep(poll)
	}
}
