package proxy

// The passthrough relay: on a route with an upstream and no channels, frames
// go from one leg to the other as they came, without being decoded,
// re-framed or copied through a WebSocket library. Every header is checked
// (RFC 6455 §5) and the message size limit is applied from headers; pings,
// pongs and closes are answered here. Client frames stay masked with the
// browser's key, which is what the upstream expects from a client.

import (
	"io"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/closecode"
)

// newRelayPump is the pump that relays frames read from src to dst. d is
// the direction; side names src. dst is nil on a channel-only route, where
// a client data frame ends the session (4003).
func newRelayPump(s *session, d direction, src, dst *wire, side closecode.Side) *pumpState {
	p := &pumpState{s: s, d: d, src: src, dst: dst, side: side}
	p.control = newControlBudget(s.h.cfg.Limits.ControlFramesPerSecond, side)
	p.control.s = s
	return p
}

// run relays until src's close frame or the end of its connection, or
// until its leg has nothing to read and is parked in its event loop
// (poll.go): the loop relays what comes next, or runs the pump again on a
// fresh goroutine. A pump the loop handed off first finishes what the loop
// could not (next), then relays what the loop left in its buffer.
func (p *pumpState) run() {
	if p.bp != nil {
		stop := false
		if p.out != nil { // a write blocked in the loop
			stop = p.finishOut()
		} else if next := p.next; next != nil {
			p.next = nil
			stop = next()
		}
		if !stop && p.n > 0 {
			stop = p.drain() == stopped
		}
		if p.release(); stop {
			p.end()
			return
		}
	}
	src := p.src
	for {
		bp, n, err := src.readFresh(p.nonBlocking())
		if err != nil {
			if idled(err) && p.park() {
				return
			}
			if idled(err) {
				continue
			}
			p.readFailed()
			p.end()
			return
		}
		p.bp, p.n = bp, n
		done := p.drain() == stopped
		if p.release(); done {
			p.end()
			return
		}
	}
}

// relayOnLoop relays what arrived on src from the event loop, without
// blocking. drained or held: the leg stays the loop's. blocked: a write to
// dst waits for it to be writable (p.out). handedOff: a goroutine must take
// the pump over (run); p.next and the buffer say where it takes up.
func (p *pumpState) relayOnLoop() drainResult {
	fresh := p.bp == nil // else held: the buffer starts with part of a frame
	if fresh {
		p.bp = bufPool.Get().(*[]byte)
	}
	m, err := p.src.readNow((*p.bp)[p.n:])
	if err != nil || m == 0 {
		if fresh {
			p.release()
		}
		if err == errWouldBlock {
			return held // nothing yet
		}
		return handedOff // the goroutine reads the end again, and ends the pump
	}
	p.n += m
	p.onLoop = true
	r := p.drain()
	p.onLoop = false
	if r == drained {
		p.release()
	}
	return r // on the loop, drain never stops the pump itself
}

// release gives the pump's buffer back to the pool.
func (p *pumpState) release() {
	if p.bp != nil {
		bufPool.Put(p.bp)
		p.bp, p.n = nil, 0
	}
}

// pumpState is one relay pump and its position in its leg's byte stream.
// Owned by the pump's goroutine.
type pumpState struct {
	s         *session
	d         direction
	src, dst  *wire
	side      closecode.Side
	bp        *[]byte // buffer in use; nil between messages
	n         int     // bytes of *bp filled
	inMessage bool    // a fragmented data message is open
	msgLen    int64   // its payload bytes so far
	dead      bool    // a write to dst failed: frames are dropped
	control   controlBudget
	polled    *polledLeg // set when the leg may be parked in the poller
	// onLoop: drain runs on the event loop, so it must not block: it hands
	// off instead, leaving in next what the goroutine that takes the pump
	// over does first (next reports whether the pump must stop).
	onLoop bool
	next   func() bool
	// A write the loop began and dst did not take at once (blocked): the
	// rest, under dst's write hold; the bytes of the buffer kept after it
	// (the start of a frame still arriving); the write_timeout timer.
	out              []byte
	keepFrom, keepTo int
	wtimer           *time.Timer
	wdeadline        time.Time // the deadline the write was armed with (recheck)
}

// What drain did with the buffer.
type drainResult int

const (
	drained   drainResult = iota // consumed at a frame boundary
	stopped                      // the pump must stop
	handedOff                    // on the loop: the rest needs a goroutine (p.next)
	held                         // on the loop: the buffer starts with part of a frame; read more into it
	blocked                      // on the loop: p.out waits for dst to be writable
)

// drain relays every frame in the buffer, reading more while a frame is
// incomplete. Once the session is closing, frames are parsed and dropped
// until src's close frame. On the loop (p.onLoop) it relays the whole
// data frames the buffer holds and hands off at anything that would wait.
func (p *pumpState) drain() drainResult {
	buf := *p.bp
	off, span := 0, 0 // frames in buf[span:off] are checked and not yet written
	for {
		h, err := parseHeader(buf[off:p.n])
		if err == errShortHeader {
			if p.onLoop {
				if off == p.n {
					return p.flushOnLoop(buf[span:off])
				}
				return p.holdOnLoop(span, off)
			}
			p.flush(buf[span:off])
			if off == p.n {
				return drained
			}
			// Move the partial header to the front and read the rest.
			p.n = copy(buf, buf[off:p.n])
			off, span = 0, 0
			if !p.readMore() {
				return stopped
			}
			continue
		}
		if err == nil && p.onLoop && p.holds(&h, off, len(buf)) {
			return p.holdOnLoop(span, off)
		}
		if err == nil {
			err = p.check(&h)
		}
		if err != nil {
			if p.onLoop {
				head := buf[span:off]
				p.next = func() bool {
					p.flush(head)
					p.refuse(err)
					return true
				}
				return handedOff
			}
			p.flush(buf[span:off])
			p.refuse(err)
			return stopped
		}
		if h.control {
			if p.onLoop { // answered, counted and budgeted off the loop
				return p.handoffAt(span, off)
			}
			end := off + h.hdrLen + int(h.length)
			if end > p.n { // control frames are short: they always fit the buffer
				p.flush(buf[span:off])
				p.n = copy(buf, buf[off:p.n])
				off, span = 0, 0
				for p.n < h.hdrLen+int(h.length) {
					if !p.readMore() {
						return stopped
					}
				}
				continue
			}
			p.flush(buf[span:off])
			if p.controlFrame(&h, buf[off+h.hdrLen:end]) {
				return stopped
			}
			off, span = end, end
			continue
		}
		frameEnd := int64(off) + int64(h.hdrLen) + h.length
		if frameEnd <= int64(p.n) {
			off = int(frameEnd)
			p.endFrame(&h)
			continue
		}
		// A data frame longer than what has arrived: write what is here
		// and stream the rest under one hold of dst's write lock, so no
		// control frame lands inside it.
		head, rest := buf[span:p.n], frameEnd-int64(p.n)
		if p.onLoop {
			hh := h // a copy: h itself stays on the stack
			p.next = func() bool { return p.streamFrame(head, rest, &hh) }
			return handedOff
		}
		if p.streamFrame(head, rest, &h) {
			return stopped
		}
		return drained
	}
}

// streamFrame streams a data frame's rest after head; it reports whether
// the pump must stop.
func (p *pumpState) streamFrame(head []byte, rest int64, h *frameHeader) bool {
	if !p.stream(head, rest) {
		return true
	}
	p.endFrame(h)
	return false
}

// holds reports whether the loop keeps the data frame at off, which has
// not all arrived, in the buffer until the rest is readable: it fits the
// buffer and would pass the header rules and the size limit, so holding it
// refuses nothing later than before (it is checked once it is whole).
func (p *pumpState) holds(h *frameHeader, off, bufLen int) bool {
	if h.control || int64(off)+int64(h.hdrLen)+h.length <= int64(p.n) ||
		int64(h.hdrLen)+h.length > int64(bufLen) || h.check(p.src.fromClient) != nil {
		return false
	}
	sofar := int64(0)
	if h.opcode == opContinuation {
		sofar = p.msgLen
	}
	return sofar+h.length <= p.s.h.cfg.MaxMessageBytes
}

// holdOnLoop writes the frames in buf[span:off] from the loop and keeps
// the bytes from off, the start of a frame, in the buffer for the loop's
// next read (held). If the write cannot finish at once, the pump is
// handed off with the bytes from off kept for the goroutine's drain.
func (p *pumpState) holdOnLoop(span, off int) drainResult {
	buf, n := *p.bp, p.n
	switch p.flushOnLoop(buf[span:off]) {
	case drained:
	case blocked:
		p.keepFrom, p.keepTo = off, n
		return blocked
	default:
		write := p.next // writes the rest of buf[span:off], then empties the buffer
		p.next = func() bool {
			stop := write()
			p.n = copy(buf, buf[off:n])
			return stop
		}
		return handedOff
	}
	p.n = copy(buf, buf[off:n])
	return held
}

// handoffAt hands the pump off from the loop with the frames in
// buf[span:off] checked and unwritten, and the bytes from off unparsed:
// the goroutine writes the first and keeps the rest for drain.
func (p *pumpState) handoffAt(span, off int) drainResult {
	p.next = func() bool {
		buf := *p.bp
		p.flush(buf[span:off])
		p.n = copy(buf, buf[off:p.n])
		return false
	}
	return handedOff
}

// flushOnLoop writes b (checked frames ending at a frame boundary) to dst
// from the loop, with one write(2) that does not wait. What dst does not
// take at once waits for dst to be writable (blocked), still under the
// hold of dst's write side, which passes to whoever finishes the write.
func (p *pumpState) flushOnLoop(b []byte) drainResult {
	if len(b) == 0 || p.dead || p.dst == nil || p.s.closing.Load() {
		return drained
	}
	dst := p.dst
	if !dst.tryLock() { // a control frame or a streamed frame is going out
		return p.handoffFlush(b)
	}
	if dst.closeSent {
		dst.unlock()
		p.dead = true // as flush: nothing more goes to a closed leg
		return drained
	}
	timeout := p.s.h.cfg.WriteTimeout
	dst.armDeadline(timeout) // raw writes check it: an expired one would fail them
	n, err := dst.writeNow(b)
	if n == len(b) {
		dst.unlock()
		return drained
	}
	if err != nil {
		dst.unlock()
		return p.handoffFlush(b[n:])
	}
	p.out, p.keepFrom, p.keepTo = b[n:], p.n, p.n
	return blocked
}

// finishOut is a blocked write's end on a goroutine (dst closed, failed or
// overran write_timeout): it writes the rest under the deadline armed
// before the loop's write began, so it fails at once unless dst took
// bytes meanwhile, and reports a failure.
func (p *pumpState) finishOut() bool {
	_, err := p.dst.conn.Write(p.out)
	p.wroteOut()
	if err != nil {
		p.writeFailed(err)
	}
	return false
}

// wroteOut ends a blocked write: dst's write side goes back, the timer
// stops, and the bytes kept after the write move to the buffer's front.
func (p *pumpState) wroteOut() {
	p.dst.unlock()
	p.wtimer.Stop()
	buf := *p.bp
	p.out, p.wtimer = nil, nil
	p.n = copy(buf, buf[p.keepFrom:p.keepTo])
	if p.n == 0 {
		p.release()
	}
}

// handoffFlush hands off the writing of b, the buffer's last frames.
func (p *pumpState) handoffFlush(b []byte) drainResult {
	p.next = func() bool {
		p.flush(b)
		p.n = 0
		return false
	}
	return handedOff
}

// check applies the header rules and the message state: sequence of
// fragments, the size limit, the message rate.
func (p *pumpState) check(h *frameHeader) error {
	if err := h.check(p.src.fromClient); err != nil {
		return err
	}
	if h.control {
		return nil
	}
	if p.dst == nil && !p.s.closing.Load() {
		// A channel-only route: the stream stays in step, the frames are
		// dropped while the session closes.
		p.s.raise(closecode.ClientMessagesRefused)
	}
	switch {
	case h.opcode == opContinuation && !p.inMessage:
		return errProtocol("continuation frame without a message")
	case h.opcode != opContinuation && p.inMessage:
		return errProtocol("new message inside a fragmented one")
	}
	if h.opcode != opContinuation {
		p.msgLen = 0
		if p.d == clientToUpstream {
			if rate := p.s.h.cfg.Limits.MessagesPerSecond; rate > 0 && !p.s.msgRate.take(time.Now(), rate) {
				// The stream stays in step: this and later frames are dropped.
				p.s.raise(closecode.MessageRate)
			}
		}
	}
	p.msgLen += h.length
	if p.msgLen > p.s.h.cfg.MaxMessageBytes {
		return websocket.ErrMessageTooBig
	}
	p.inMessage = !h.fin
	return nil
}

// endFrame counts a message once its final frame has gone.
func (p *pumpState) endFrame(h *frameHeader) {
	if h.fin && !p.s.closing.Load() {
		p.s.count(p.d, int(p.msgLen))
	}
}

// flush writes checked frames to dst, unless the session is closing or a
// write to dst has failed: they are dropped then.
func (p *pumpState) flush(b []byte) {
	if len(b) == 0 || p.dead || p.dst == nil || p.s.closing.Load() {
		return
	}
	if err := p.dst.write(b, p.s.h.cfg.WriteTimeout); err != nil {
		p.writeFailed(err)
	}
}

// stream writes head (whole frames, then the start of a long one) and the
// long frame's remaining bytes as they arrive. It reports false if src
// ended first.
func (p *pumpState) stream(head []byte, rest int64) bool {
	dst, buf := p.dst, *p.bp
	timeout := p.s.h.cfg.WriteTimeout
	werr := errWireClosed // the frame is read and dropped unless written
	if dst != nil {
		dst.lock()
		if !p.dead && !dst.closeSent && !p.s.closing.Load() {
			werr = dst.writeLocked(head, timeout)
		}
	}
	var rerr error
	for rest > 0 && rerr == nil {
		var m int
		m, rerr = p.src.read(buf[:min(rest, int64(len(buf)))])
		rest -= int64(m)
		if m > 0 && werr == nil {
			werr = dst.writeLocked(buf[:m], timeout)
		}
	}
	if dst != nil {
		dst.unlock()
	}
	p.n = 0
	if werr != nil {
		p.writeFailed(werr)
	}
	if rest > 0 {
		p.readFailed()
		return false
	}
	return true
}

// readMore appends what arrives next to the buffer.
func (p *pumpState) readMore() bool {
	buf := *p.bp
	m, err := p.src.read(buf[p.n:])
	p.n += m
	if err != nil && m == 0 {
		p.readFailed()
		return false
	}
	return true
}

// control answers a ping, notes a pong, or handles the peer's close.
// payload is still masked if the frame was. It reports whether to stop.
func (p *pumpState) controlFrame(h *frameHeader, payload []byte) bool {
	if h.opcode != opClose && !p.control.take() {
		return true // flooded: the leg is read no further
	}
	if h.masked {
		unmask(payload, h.key, 0)
	}
	switch h.opcode {
	case opPing:
		if !p.s.closing.Load() {
			p.src.writeControl(opPong, payload, p.s.h.cfg.WriteTimeout)
		}
	case opPong:
		p.src.pongRead()
	case opClose:
		ce, err := parseCloseBody(payload)
		if err != nil {
			p.refuse(err)
			return true
		}
		p.s.legEnded(p.side, ce)
		return true
	}
	return false
}

// refuse ends the session for a frame src should not have sent: the same
// event coder/websocket's refusal raises on other routes (legEvent).
func (p *pumpState) refuse(err error) {
	p.s.raise(legEvent(p.side, err))
}

// readFailed ends the session for src's connection ending.
func (p *pumpState) readFailed() {
	p.s.legEnded(p.side, io.EOF)
}

// writeFailed ends the session for a write to dst that failed.
func (p *pumpState) writeFailed(err error) {
	p.dead = true
	if p.d == clientToUpstream {
		p.s.writeFailed(sideUpstream, err)
	} else {
		p.s.writeFailed(sideClient, err)
	}
}
