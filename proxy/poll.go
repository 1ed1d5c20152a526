package proxy

import (
	"errors"
	"sync/atomic"
	"syscall"
)

// Idle wire legs hold no goroutine and no buffer: a relay pump on a plain
// socket is parked in the event loop (poller) between bursts, and run on a
// goroutine of its own only while bytes are there. A pump in the middle of
// a frame waits for the rest, and a write to a peer that is slow to take
// it waits for the socket, in Go's netpoller on that goroutine. Legs
// without a raw socket (wss:// upstreams, wrapped connections) and
// platforms without epoll keep a goroutine for the leg's whole life.

// polledLeg is a relay pump registered with the poller.
type polledLeg struct {
	p     *pumpState
	raw   syscall.RawConn
	fd    int32 // set by poller.add
	state atomic.Int32
	// again: an event came while the pump was running; it reads once more
	// before it parks, so no arrival is missed between its last read and
	// its parking.
	again atomic.Bool
}

// States of a polledLeg.
const (
	legRunning int32 = iota // a goroutine is reading it
	legParked               // armed in the poller, nobody reading
	legEnded                // its pump has stopped
)

// errWouldBlock: nothing has arrived.
var errWouldBlock = errors.New("would block")

// ready is the poller's event for l; it runs l's pump unless one is
// running. Called from the loop, holding its lock: it never blocks.
func (l *polledLeg) ready() {
	l.again.Store(true) // before the CAS: see readReady
	if l.state.CompareAndSwap(legParked, legRunning) {
		thePoller.dispatchLocked(l)
	}
}

// start runs the pump: parked in the poller when its leg is a plain socket
// and the poller is there, else on a goroutine for the leg's life. The
// first burst (bytes behind the handshake, or already arrived) is read at
// once.
func (p *pumpState) start() {
	if p.src.raw != nil {
		l := &polledLeg{p: p, raw: p.src.raw} // legRunning: events wait for the first burst
		p.polled = l
		p.src.polled.Store(l)
		if thePoller.add(l) == nil {
			thePoller.dispatch(l)
			return
		}
		p.polled = nil
		p.src.polled.Store(nil)
	}
	go p.run()
}

// readReady reads and relays what has arrived until the leg would block,
// then parks it in the poller. Its goroutine ends there.
func (p *pumpState) readReady() {
	l := p.polled
	for {
		bp, n, err := p.src.readNow()
		if err == errWouldBlock {
			l.state.Store(legParked)
			if !l.again.Swap(false) || !l.state.CompareAndSwap(legParked, legRunning) {
				return // parked; or another event (or the closer) took it
			}
			continue
		}
		if err != nil {
			p.readFailed()
			p.end()
			return
		}
		p.bp, p.n = bp, n
		done := p.drain()
		if p.bp != nil {
			bufPool.Put(p.bp)
			p.bp = nil
		}
		if done {
			p.end()
			return
		}
	}
}

// end marks the pump stopped: its leg leaves the poller, its close
// handshake stops waiting, and the session counts one reader less. It runs
// once, on the goroutine that stops the pump.
func (p *pumpState) end() {
	if l := p.polled; l != nil {
		l.state.Store(legEnded)
		thePoller.remove(l)
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
