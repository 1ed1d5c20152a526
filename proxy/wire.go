package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// bufPool holds the read buffers of pumps: taken when bytes arrive, put
// back between messages, so an idle leg holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// wire is a leg wsgate frames itself (relayed by relay.go): the raw
// connection after the handshake, read by exactly one pump. Writers (the
// other leg's pump or the channel writer, pong replies, the heartbeat, the
// close) take turns holding wsem, one at a time; a control frame that
// cannot get it in time gives up rather than wait behind a stalled stream.
type wire struct {
	conn       net.Conn
	raw        syscall.RawConn // non-nil: a plain socket, read without holding a buffer while idle
	fromClient bool            // frames read from this leg come from the browser (masked)
	pending    []byte          // bytes that arrived with the handshake, read first
	one        [1]byte         // owned by the pump: the wait of a non-socket read

	wsem      chan struct{} // holding its one slot is holding the write side
	closeSent bool          // guarded by wsem: nothing is written after the close frame
	deadline  time.Time     // guarded by wsem: the write deadline set on conn

	// Owned by the pump reading this leg: the read callbacks and results.
	readFn, readIntoFn func(fd uintptr) bool
	rinto              []byte // readNow's destination
	// idle, when set, bounds readFresh's wait: a leg with nothing to read
	// for between idle/2 and idle is parked in the poller (poll.go).
	idle      time.Duration
	rdeadline time.Time // the read deadline set on conn, or zero
	rbuf      *[]byte
	rn        int
	rerr      error

	// Guarded by wsem: the non-blocking write's callback and results.
	writeNowFn func(fd uintptr) bool
	wbuf       []byte
	wn         int
	werr       error

	closed   atomic.Bool   // set by close before the connection is closed
	pong     chan struct{} // the pump signals each pong read here; capacity 1
	readDone chan struct{} // closed when this leg's pump stops reading
	// The pump, while it is registered with the poller (poll.go): closing
	// the connection ends it if it is parked.
	polled atomic.Pointer[polledLeg]
	// The pump whose write to this leg waits in its event loop (poll.go):
	// closing the connection hands that write to a goroutine, which fails it.
	blocked atomic.Pointer[polledLeg]
}

func newWire(conn net.Conn, pending []byte, fromClient bool) *wire {
	w := &wire{conn: conn, fromClient: fromClient, readDone: make(chan struct{}),
		wsem: make(chan struct{}, 1), pong: make(chan struct{}, 1)}
	if len(pending) > 0 {
		w.pending = append([]byte(nil), pending...)
	}
	w.raw = rawConnOf(conn)
	w.readFn, w.readIntoFn = w.readOnce, w.readIntoOnce
	w.writeNowFn = w.writeNowOnce
	return w
}

// close closes the connection, and ends its pump if it is parked.
func (w *wire) close() {
	w.closed.Store(true)
	w.conn.Close()
	if l := w.polled.Load(); l != nil {
		l.endParked()
	}
	if l := w.blocked.Load(); l != nil {
		l.unblock()
	}
}

// errWouldBlock: a non-blocking read found nothing to read.
var errWouldBlock = errors.New("nothing to read")

// readFresh waits for the leg to be readable and reads into a pooled
// buffer taken only once bytes are there. nonBlocking: it does not wait,
// but returns errWouldBlock (plain sockets only).
func (w *wire) readFresh(nonBlocking bool) (*[]byte, int, error) {
	if len(w.pending) > 0 {
		bp := bufPool.Get().(*[]byte)
		n, _ := w.read(*bp)
		return bp, n, nil
	}
	if w.raw == nil {
		// TLS (or a wrapped connection): wait on a one-byte read, then take
		// a buffer; the frame parser reads the rest of the frame into it.
		n, err := w.conn.Read(w.one[:])
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return nil, 0, err
		}
		bp := bufPool.Get().(*[]byte)
		(*bp)[0] = w.one[0]
		return bp, 1, nil
	}
	if w.idle > 0 {
		// Moved only when less than half is left: most waits cost no
		// timer update.
		if now := time.Now(); w.rdeadline.Sub(now) < w.idle/2 {
			w.rdeadline = now.Add(w.idle)
			w.conn.SetReadDeadline(w.rdeadline)
		}
	}
	if nonBlocking {
		bp := bufPool.Get().(*[]byte)
		n, err := w.readNow(*bp)
		if err == nil && n == 0 {
			err = io.EOF
		}
		if err != nil {
			bufPool.Put(bp)
			return nil, 0, err
		}
		return bp, n, nil
	}
	err := w.raw.Read(w.readFn)
	bp, n, rerr := w.rbuf, w.rn, w.rerr
	w.rbuf, w.rerr = nil, nil
	switch {
	case err != nil:
		rerr = err
	case rerr == nil && n == 0:
		rerr = io.EOF
	}
	if rerr != nil {
		if bp != nil {
			bufPool.Put(bp)
		}
		return nil, 0, rerr
	}
	return bp, n, nil
}

// readOnce is the syscall.RawConn read callback (bound once, as readFn,
// so a read allocates nothing): one read(2) into a pooled buffer taken
// for it, or false on EAGAIN to wait for readability holding nothing.
func (w *wire) readOnce(fd uintptr) bool {
	bp := bufPool.Get().(*[]byte)
	n, err := readFD(fd, *bp)
	if err == syscall.EAGAIN {
		bufPool.Put(bp)
		return false
	}
	w.rbuf, w.rn, w.rerr = bp, n, err
	if err != nil {
		bufPool.Put(bp)
		w.rbuf = nil
	}
	return true
}

// readNow reads into p what has arrived, without waiting (errWouldBlock:
// nothing has). Plain sockets only, read by the leg's pump.
func (w *wire) readNow(p []byte) (int, error) {
	w.rinto = p
	err := w.raw.Read(w.readIntoFn)
	n, rerr := w.rn, w.rerr
	w.rinto, w.rn, w.rerr = nil, 0, nil
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// readIntoOnce is readNow's syscall.RawConn callback, bound once.
func (w *wire) readIntoOnce(fd uintptr) bool {
	w.rn, w.rerr = readFD(fd, w.rinto)
	if w.rerr == syscall.EAGAIN {
		w.rn, w.rerr = 0, errWouldBlock
	}
	return true
}

// read reads what arrived next: bytes left from the handshake first.
func (w *wire) read(p []byte) (int, error) {
	if len(w.pending) > 0 {
		n := copy(p, w.pending)
		if w.pending = w.pending[n:]; len(w.pending) == 0 {
			w.pending = nil
		}
		return n, nil
	}
	if !w.rdeadline.IsZero() { // the rest of a frame has no idle bound
		w.rdeadline = time.Time{}
		w.conn.SetReadDeadline(w.rdeadline)
	}
	return w.conn.Read(p)
}

// errWireClosed: the close frame has been sent; nothing more goes out.
var errWireClosed = errors.New("close frame already sent")

// write sends p (whole frames) with a write deadline.
func (w *wire) write(p []byte, timeout time.Duration) error {
	w.lock()
	defer w.unlock()
	if w.closeSent {
		return errWireClosed
	}
	return w.writeLocked(p, timeout)
}

func (w *wire) writeLocked(p []byte, timeout time.Duration) error {
	w.armDeadline(timeout)
	_, err := w.conn.Write(p)
	return err
}

// lock takes the write side; unlock gives it back.
func (w *wire) lock()   { w.wsem <- struct{}{} }
func (w *wire) unlock() { <-w.wsem }

// tryLock takes the write side if nobody holds it.
func (w *wire) tryLock() bool {
	select {
	case w.wsem <- struct{}{}:
		return true
	default:
		return false
	}
}

// writeNow writes what of p the socket takes at once, with one write(2)
// that never waits (EAGAIN: 0 bytes, no error). Plain sockets only; call
// holding the write side.
func (w *wire) writeNow(p []byte) (int, error) {
	w.wbuf = p
	err := w.raw.Write(w.writeNowFn)
	n, werr := w.wn, w.werr
	w.wbuf, w.wn, w.werr = nil, 0, nil
	if err != nil {
		return 0, err
	}
	return n, werr
}

// writeNowOnce is writeNow's syscall.RawConn callback, bound once (as
// writeNowFn) so a write allocates nothing. It never asks to wait.
func (w *wire) writeNowOnce(fd uintptr) bool {
	w.wn, w.werr = writeFD(fd, w.wbuf)
	if w.werr == syscall.EAGAIN {
		w.werr = nil
	}
	return true
}

// lockWithin takes the write side unless a frame being streamed holds it
// past deadline (its source stalled); control writes then give up.
func (w *wire) lockWithin(deadline time.Time) bool {
	select {
	case w.wsem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case w.wsem <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// armDeadline makes a write give up once the peer has not taken it for
// between timeout/2 and timeout: the deadline is moved only when less than
// half of it is left, so most writes cost no timer update. Call holding
// the write side.
func (w *wire) armDeadline(timeout time.Duration) {
	if now := time.Now(); w.deadline.Sub(now) < timeout/2 {
		w.deadline = now.Add(timeout)
		w.conn.SetWriteDeadline(w.deadline)
	}
}

// maxBatch bounds the channel messages written in one writev(2).
const maxBatch = 16

// delivery is one channel message for the client.
type delivery struct {
	binary  bool
	payload []byte // shared with every subscriber: never modified
}

// iovecs is writeMessages' scratch: net.Buffers.WriteTo keeps its vector
// on the heap, so it is pooled rather than allocated per batch.
type iovecs struct {
	hdrs [maxBatch][10]byte
	iov  [2 * maxBatch][]byte
	bufs net.Buffers
}

var iovPool = sync.Pool{New: func() any { return new(iovecs) }}

// deliver writes batch as frames with one writev(2): a header built here
// for each, the payloads as they are.
func (w *wire) deliver(batch []delivery, timeout time.Duration) error {
	v := iovPool.Get().(*iovecs)
	defer func() {
		clear(v.iov[:]) // hold no payload in the pool
		iovPool.Put(v)
	}()
	v.bufs = v.iov[:0]
	for i, d := range batch {
		v.bufs = append(v.bufs, appendHeader(v.hdrs[i][:0], deliveryOp(d), len(d.payload), false), d.payload)
	}
	w.lock()
	defer w.unlock()
	if w.closeSent {
		return errWireClosed
	}
	w.armDeadline(timeout)
	_, err := v.bufs.WriteTo(w.conn)
	return err
}

// writeControl sends one control frame wsgate originates. A close frame
// is sent once; nothing follows it.
func (w *wire) writeControl(op byte, payload []byte, within time.Duration) error {
	deadline := time.Now().Add(within)
	if !w.lockWithin(deadline) {
		return errWireClosed
	}
	defer w.unlock()
	if w.closeSent {
		return errWireClosed
	}
	if op == opClose {
		w.closeSent = true
	}
	var buf [maxHeaderLen + maxControlPayload]byte
	w.deadline = deadline
	w.conn.SetWriteDeadline(deadline)
	_, err := w.conn.Write(appendFrame(buf[:0], op, payload, !w.fromClient))
	return err
}

// pingPayload is what wsgate's pings carry.
var pingPayload = []byte("wsgate")

// ping sends a ping and waits for the pump to read a pong (RFC 6455 §5.5.3
// lets a pong answer the latest ping only, or none: any pong will do).
func (w *wire) ping(ctx context.Context) error {
	select {
	case <-w.pong: // read before this ping
	default:
	}
	within := closeHandshakeTimeout
	if dl, ok := ctx.Deadline(); ok {
		within = time.Until(dl)
	}
	if err := w.writeControl(opPing, pingPayload, within); err != nil {
		return err
	}
	select {
	case <-w.pong:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pongRead is called by the pump for each pong.
func (w *wire) pongRead() {
	select {
	case w.pong <- struct{}{}:
	default: // a pong is already waiting to be seen
	}
}

// drop closes the connection at once.
func (w *wire) drop() { w.close() }

// closeUnread closes a leg no pump ever read (the session never ran):
// nobody would see the peer's answer, so none is awaited.
func (w *wire) closeUnread(code websocket.StatusCode, reason string) {
	close(w.readDone)
	w.closeHandshake(code, reason, closeHandshakeTimeout, false)
}

// closeHandshake sends the close frame and ends the connection once the
// peer has answered (its pump saw the close frame or the connection end),
// or within has passed. broken: the peer broke the protocol, its pump has
// stopped; what it sends is drained unread until it closes or time is up.
func (w *wire) closeHandshake(code websocket.StatusCode, reason string, within time.Duration, broken bool) {
	deadline := time.Now().Add(within)
	w.writeControl(opClose, closeBody(code, reason), within)
	t := time.NewTimer(time.Until(deadline)) // the write and the wait share within
	defer t.Stop()
	select {
	case <-w.readDone:
	case <-t.C:
	}
	if broken && time.Now().Before(deadline) {
		// Tell the peer nothing more is coming, then read until it closes,
		// so it gets the close frame rather than a reset.
		if cw, ok := w.conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		w.conn.SetReadDeadline(deadline)
		io.Copy(io.Discard, io.LimitReader(w.conn, 1<<20))
	}
	w.close()
}
