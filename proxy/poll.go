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
// fits stays on the loop, held until the rest is readable), control frames
// (pongs, close handshakes, budgets), a refused frame, the end of the
// connection. That goroutine reads on until the leg has nothing
// more to read, then parks it back in its loop and ends.
//
// A write the other leg does not take at once blocks the pump in its loop
// (legBlocked): its leg is read no further, the rest of the write waits for
// the other leg's write readiness (EPOLLOUT) under that leg's write hold,
// and the loop finishes it; still no goroutine. Only write_timeout passing,
// or the other leg closing, hands the write to a goroutine, which reports it.
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
	legBlocked              // not watched; its loop waits for the other leg to take a write
	legEnded                // its pump has stopped
)

// start hands a leg the loop relays straight to its loop: nothing is read
// and no buffer or goroutine is taken until bytes come (already-arrived
// bytes make the leg ready at once). A leg with bytes that came with the
// handshake, or one the loop cannot relay, starts on a goroutine, which
// parks it once it has nothing to read.
func (p *pumpState) start() {
	if p.src.raw != nil {
		p.polled = &polledLeg{p: p, raw: p.src.raw, relays: p.dst == nil || p.dst.raw != nil}
		p.src.polled.Store(p.polled)
		if !p.polled.relays {
			p.src.idle = parkAfter
		} else if len(p.src.pending) == 0 && p.park() {
			return
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
	if l.relays {
		switch l.p.relayOnLoop() {
		case drained, held:
			l.parked()
			return
		case blocked:
			l.disarm()
			l.block()
			return
		}
	}
	l.disarm()
	go l.p.run()
}

// parked hands the running leg back to its (watching) loop.
func (l *polledLeg) parked() {
	l.state.Store(legParked)
	if l.p.src.closed.Load() {
		// Closed while the loop ran it: the closer found the leg running
		// and left its end to the pump.
		go l.endParked()
	}
}

// block parks the pump, its leg not watched, until the other leg takes the
// rest of the write the loop began (p.out, under dst's write hold): the
// loop's write wait then runs writable. write_timeout passing, or dst
// closing, runs unblock instead.
func (l *polledLeg) block() {
	p, dst := l.p, l.p.dst
	p.wdeadline = dst.deadline // guarded by dst's write side, which the pump holds
	p.wtimer = time.AfterFunc(time.Until(p.wdeadline), l.unblock)
	l.state.Store(legBlocked)
	if l.waitWritable(dst, false) != nil {
		l.unblock() // dst is closed
		return
	}
	dst.blocked.Store(l)
	l.recheck()
}

// recheck unblocks a pump just blocked (again) if what would unblock it
// came while it was not: dst closed, or the timer fired. It reads the
// deadline block copied, not dst's own: once blocked, the pump may be
// unblocked and dst's write side passed on at any moment.
func (l *polledLeg) recheck() {
	if l.p.dst.closed.Load() || !time.Now().Before(l.p.wdeadline) {
		l.unblock()
	}
}

// unblock gives a blocked write to a goroutine (run's finishOut), which
// finishes or fails it: dst is closing or write_timeout has passed.
func (l *polledLeg) unblock() {
	if !l.state.CompareAndSwap(legBlocked, legRunning) {
		return
	}
	l.p.dst.blocked.CompareAndSwap(l, nil)
	l.unwaitWritable(l.p.dst)
	go l.p.run()
}

// writable is the loop's event for a blocked pump: dst can take more of
// the write (or has failed). A write it finishes gives dst's write side
// back and the pump's leg to the loop again.
func (l *polledLeg) writable() {
	if !l.state.CompareAndSwap(legBlocked, legRunning) {
		return // unblocked meanwhile
	}
	p, dst := l.p, l.p.dst
	n, err := dst.writeNow(p.out)
	if err == nil && n < len(p.out) {
		p.out = p.out[n:]
		l.state.Store(legBlocked)
		if l.waitWritable(dst, true) != nil {
			l.unblock()
			return
		}
		l.recheck()
		return
	}
	dst.blocked.CompareAndSwap(l, nil)
	l.unwaitWritable(dst)
	if err != nil {
		go p.run() // finishOut fails the write and reports it
		return
	}
	p.wroteOut()
	if l.arm() != nil {
		go p.run() // the leg is closing: the goroutine's read ends the pump
		return
	}
	l.parked()
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
