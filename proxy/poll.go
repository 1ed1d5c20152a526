package proxy

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Wire legs on plain sockets are relayed by wsgate's event loops
// (poller_linux.go: epoll, one loop per CPU), not by a goroutine each.
//
// When a leg is readable its loop reads it once into a pooled buffer,
// relays the whole frames it holds with one non-blocking write to the
// other leg, and gives the buffer back: a leg between messages holds no
// goroutine and no buffer, and a busy one costs a read and a write per
// batch of frames, the loop's epoll_wait shared by every leg it watches.
// Whatever cannot be done without waiting is handed to a goroutine that
// takes the pump over (handoff): a frame longer than the buffer (one that
// fits stays on the loop, held until the rest is readable), a write
// the other leg does not take at once (the goroutine waits for write
// readiness in Go's netpoller, bounded by write_timeout), control frames
// (pongs, close handshakes, budgets), a refused frame, the end of the
// connection. That goroutine reads on until the leg has nothing more to
// read, then parks it back in its loop and ends.
//
// Legs whose other side has no plain socket (a wss:// upstream: TLS must
// be written by a goroutine) keep a goroutine while busy; once quiet for
// parkAfter they are parked in the loop too, which only wakes them onto a
// fresh goroutine. Legs without a plain socket themselves (TLS, wrapped
// connections) and platforms without epoll keep their goroutine.

// parkAfter is how long a leg that the loop cannot relay waits for bytes,
// in Go's netpoller, before it is parked: between parkAfter/2 and
// parkAfter.
const parkAfter = 2 * time.Second

// polledLeg is a relay pump's registration with its event loop.
type polledLeg struct {
	p    *pumpState
	raw  syscall.RawConn
	fd   int32   // set by the first arm
	loop *poller // set by the first arm
	// relays: the loop relays this leg's frames itself; otherwise an event
	// only starts a goroutine. Static after start.
	relays     bool
	registered bool // owned by the pump: in its loop's table
	state      atomic.Int32
}

// States of a polledLeg.
const (
	legRunning int32 = iota // a goroutine, or the loop for one event, is running the pump
	legParked               // watched by the loop, nobody running it
	legEnded                // its pump has stopped
)

// start runs the pump on a goroutine, which parks its leg in the loop
// once it has nothing to read.
func (p *pumpState) start() {
	if p.src.raw != nil {
		p.polled = &polledLeg{p: p, raw: p.src.raw, relays: p.dst == nil || p.dst.raw != nil}
		p.src.polled.Store(p.polled)
		if !p.polled.relays {
			p.src.idle = parkAfter
		}
	}
	go p.run()
}

// ready is the loop's event for l: bytes (or the peer's hangup) arrived on
// its parked leg. The loop relays them if it can; otherwise a goroutine
// takes the pump over. Called from the loop: it never blocks.
func (l *polledLeg) ready() {
	if !l.state.CompareAndSwap(legParked, legRunning) {
		return // ended meanwhile
	}
	if l.relays && l.p.relayOnLoop() {
		l.state.Store(legParked)
		if l.p.src.closed.Load() {
			// Closed while the loop relayed: the closer found the leg
			// running and left its end to the pump.
			go l.endParked()
		}
		return
	}
	l.disarm()
	go l.p.run()
}

// nonBlocking reports whether the pump's reads return errWouldBlock rather
// than wait: its leg goes back to the loop as soon as it is drained.
func (p *pumpState) nonBlocking() bool { return p.polled != nil && p.polled.relays }

// park parks the pump's idle leg in its loop. It reports whether the
// pump's goroutine must end: the leg is parked, or the closer has ended
// the pump. Otherwise (no poller) the pump reads on, blocking.
func (p *pumpState) park() bool {
	l := p.polled
	l.state.Store(legParked) // before arming: the first event finds it parked
	err := l.arm()
	if err == nil {
		return true
	}
	if !l.state.CompareAndSwap(legParked, legRunning) {
		return true // the closer took it
	}
	if !errors.Is(err, errNoPoller) {
		return false // the connection is closing: the next read ends the pump
	}
	l.relays = false
	p.src.idle = 0
	return false
}

// idled reports whether err is readFresh's idle bound passing, or a
// non-blocking read finding nothing.
func idled(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) || err == errWouldBlock }

// end marks the pump stopped: its leg leaves the loop, its close
// handshake stops waiting, and the session counts one reader less. It runs
// once, on the goroutine that stops the pump.
func (p *pumpState) end() {
	if l := p.polled; l != nil {
		l.state.Store(legEnded)
		if l.registered {
			l.remove()
		}
	}
	close(p.src.readDone)
	p.s.readerDone()
}

// endParked ends the pump of a leg being closed if it is parked (nobody
// would see the connection end); a running pump ends by itself.
func (l *polledLeg) endParked() {
	if l.state.CompareAndSwap(legParked, legEnded) {
		l.p.readFailed()
		l.p.end()
	}
}
