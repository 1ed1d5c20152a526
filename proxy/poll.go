package proxy

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Idle wire legs hold no goroutine and no buffer. A relay pump on a plain
// socket reads on a goroutine of its own while its leg is busy, waiting in
// Go's netpoller as before; once the leg has been quiet for parkAfter, the
// pump parks it in wsgate's event loop (poller) and its goroutine ends.
// The next bytes wake the leg onto a fresh goroutine. Busy legs so cost
// what a goroutine per direction costs (no extra syscall or wake-up per
// message), and idle ones only their socket and a little heap. Legs
// without a raw socket (wss:// upstreams, wrapped connections) and
// platforms without epoll keep their goroutine.

// parkAfter is how long a leg waits for bytes, in Go's netpoller, before it
// is parked: between parkAfter/2 and parkAfter.
const parkAfter = 2 * time.Second

// polledLeg is a relay pump's registration with the poller.
type polledLeg struct {
	p     *pumpState
	raw   syscall.RawConn
	fd    int32 // set by poller.add
	added bool  // owned by the pump: registered (later parks re-arm)
	state atomic.Int32
}

// States of a polledLeg.
const (
	legRunning int32 = iota // a goroutine is reading it
	legParked               // armed in the poller, nobody reading
	legEnded                // its pump has stopped
)

// start runs the pump on a goroutine; a pump on a plain socket parks its
// leg when it idles.
func (p *pumpState) start() {
	if p.src.raw != nil {
		p.polled = &polledLeg{p: p, raw: p.src.raw}
		p.src.polled.Store(p.polled)
		p.src.idle = parkAfter
	}
	go p.run()
}

// ready is the poller's event for l: bytes arrived on its parked leg.
// Called from the loop: it never blocks.
func (l *polledLeg) ready() {
	if l.state.CompareAndSwap(legParked, legRunning) {
		go l.p.run()
	}
}

// park parks the pump's idle leg in the poller. It reports whether the
// pump's goroutine must end: the leg is parked, or the closer has ended
// the pump. Otherwise (no poller) the pump reads on without an idle bound.
func (p *pumpState) park() bool {
	l := p.polled
	first := !l.added
	l.added = true           // before parking: the goroutine an event starts reads it
	l.state.Store(legParked) // before arming: the first event finds it parked
	var err error
	if first {
		err = thePoller.add(l)
	} else {
		err = thePoller.rearm(l)
	}
	if err == nil {
		return true
	}
	if !l.state.CompareAndSwap(legParked, legRunning) {
		return true // the closer took it
	}
	l.added = !first
	if !errors.Is(err, errNoPoller) {
		return false // the connection is closing: the next read ends the pump
	}
	p.src.idle = 0
	return false
}

// idled reports whether err is readFresh's idle bound passing.
func idled(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// end marks the pump stopped: its leg leaves the poller, its close
// handshake stops waiting, and the session counts one reader less. It runs
// once, on the goroutine that stops the pump.
func (p *pumpState) end() {
	if l := p.polled; l != nil {
		l.state.Store(legEnded)
		if l.added {
			thePoller.remove(l)
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
