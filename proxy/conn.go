package proxy

// Legs carried by coder/websocket Conns, and their message pumps: on routes
// whose messages wsgate reads or writes itself (a publish route, or an
// upstream together with channels). Messages are read from one leg and
// written to the other (or published) a buffer at a time.

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/closecode"
)

// connLeg is a leg carried by a coder/websocket Conn.
type connLeg struct {
	c   *websocket.Conn
	raw net.Conn // the connection under c, if known: dropped when a close overruns

	// Owned by the channel writer (deliver).
	deliverTimer writeTimer
}

func newConnLeg(c *websocket.Conn, raw net.Conn) *connLeg {
	l := &connLeg{c: c, raw: raw}
	l.deliverTimer.c = c
	return l
}

func (l *connLeg) deliver(batch []delivery, timeout time.Duration) error {
	for _, d := range batch {
		typ := websocket.MessageText
		if d.binary {
			typ = websocket.MessageBinary
		}
		err := l.deliverTimer.run(timeout, func(ctx context.Context) error { return l.c.Write(ctx, typ, d.payload) })
		if err != nil {
			return err
		}
	}
	return nil
}

func (l *connLeg) ping(ctx context.Context) error { return l.c.Ping(ctx) }

func (l *connLeg) closeHandshake(code websocket.StatusCode, reason string, within time.Duration, _ bool) {
	closeBounded(l.c, l.raw, code, reason, within)
}

func (l *connLeg) drop() {
	// CloseNow waits for a close handshake in progress; closing the
	// connection underneath ends it.
	if l.raw != nil {
		l.raw.Close()
	}
	l.c.CloseNow()
}

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

// writeTimer bounds blocking writes to a Conn: when one overruns, the timer
// closes the Conn, which ends the write. Owned by one writing goroutine,
// which waits for a fired callback to finish before it goes on; the timer
// allocates once and is re-armed per write.
type writeTimer struct {
	c     *websocket.Conn
	t     *time.Timer
	fired chan struct{}
}

// run runs write bounded by timeout. A write cut short by the timer returns
// os.ErrDeadlineExceeded.
func (w *writeTimer) run(timeout time.Duration, write func(context.Context) error) error {
	if w.t == nil {
		w.fired = make(chan struct{}, 1)
		w.t = time.AfterFunc(timeout, w.expire)
	} else {
		w.t.Reset(timeout)
	}
	// Writes take a context that never ends: the library arms a timer per
	// write for a cancellable one.
	err := write(context.Background())
	if !w.t.Stop() {
		<-w.fired
		return os.ErrDeadlineExceeded
	}
	return err
}

func (w *writeTimer) expire() {
	w.c.CloseNow()
	w.fired <- struct{}{}
}

// msgPumps carries messages between the coder/websocket legs of a session.
type msgPumps struct {
	s                *session
	client, upstream *websocket.Conn // upstream is nil without one
	// Owned by the goroutine writing in that direction.
	writeTimers [numDirections]writeTimer
	// Owned by the goroutine reading in that direction: tells a failed read
	// of the source from a failed write to the peer.
	sources [numDirections]sourceReader
}

func newMsgPumps(s *session, client, upstream *websocket.Conn) *msgPumps {
	p := &msgPumps{s: s, client: client, upstream: upstream}
	p.writeTimers[clientToUpstream].c = upstream
	p.writeTimers[upstreamToClient].c = client
	return p
}

// clientToUpstream carries client messages to the upstream and/or the
// publish channel.
func (p *msgPumps) clientToUpstream() {
	s := p.s
	for {
		// Readers take a context that never ends: the library arms a timer per
		// read for a cancellable one, and legs end by being closed anyway.
		typ, r, err := p.client.Reader(context.Background())
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
			err = p.publishMessage(typ, r)
		case p.upstream != nil:
			err = p.copyMessage(p.upstream, clientToUpstream, typ, r)
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
func (p *msgPumps) upstreamToClient() {
	for {
		typ, r, err := p.upstream.Reader(context.Background())
		if err != nil {
			p.s.legEnded(sideUpstream, err)
			return
		}
		if err := p.copyMessage(p.client, upstreamToClient, typ, r); err != nil {
			p.s.readOrWriteFailed(sideUpstream, sideClient, err)
			return
		}
	}
}

func (p *msgPumps) publishMessage(typ websocket.MessageType, r io.Reader) error {
	s := p.s
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if !s.h.pubRate.spend(userKey(s.id.Tenant, s.id.User), len(b), time.Now()) {
		s.raise(closecode.PublishRateExceeded)
		return errPublishRate
	}
	if err := s.h.hub.Publish(s.ctx, s.publish, b); err != nil {
		s.raise(publishClose(err))
		return err
	}
	s.count(clientToChannel, len(b))
	if p.upstream != nil {
		err := p.writeTimers[clientToUpstream].run(s.h.cfg.WriteTimeout, func(ctx context.Context) error { return p.upstream.Write(ctx, typ, b) })
		if err != nil {
			return &peerWriteError{err}
		}
		s.count(clientToUpstream, len(b))
	}
	return nil
}

// copyMessage streams one message from r to dst. A message that fits one
// buffer is written as a single frame; a larger one is streamed frame by
// frame, so memory stays bounded whatever max_message_bytes is. No buffer
// is held between messages.
func (p *msgPumps) copyMessage(dst *websocket.Conn, d direction, typ websocket.MessageType, msg io.Reader) (err error) {
	s, wt := p.s, &p.writeTimers[d]
	src := &p.sources[d]
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
		err = wt.run(s.h.cfg.WriteTimeout, func(ctx context.Context) error { return dst.Write(ctx, typ, buf[:n]) })
		if err == nil {
			s.count(d, n)
		}
		return err
	case err != nil:
		return err
	}
	total := int64(n)
	err = wt.run(s.h.cfg.WriteTimeout, func(ctx context.Context) error {
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
// a read error is src's doing; a write error is the peer's (writeFailed).
func (s *session) readOrWriteFailed(src, peer closecode.Side, err error) {
	var pw *peerWriteError
	if errors.As(err, &pw) {
		s.writeFailed(peer, pw.err)
		return
	}
	s.legEnded(src, err)
}
