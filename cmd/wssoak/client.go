package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/closecode"
)

// client holds one connection slot for the whole load: it connects with a
// fresh token, sends a message every Interval and checks the echo, and
// reconnects after a churn request or its token's expiry close.
func (s *soaker) client(ctx context.Context, wg *sync.WaitGroup, id int) {
	defer wg.Done()
	// Spread the opening handshakes over the ramp.
	if !sleepCtx(ctx, s.o.Ramp*time.Duration(id)/time.Duration(s.o.Conns)) {
		return
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			s.rep.Reconnects.Add(1)
		}
		exp := time.Now().Add(s.o.TTLMin + rand.N(s.o.TTLMax-s.o.TTLMin+1)).Truncate(time.Second)
		c, err := s.dial(ctx, id, exp)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.rep.DialErrors.Add(1)
			s.rep.fail("client %d: dial: %v", id, err)
			sleepCtx(ctx, time.Second)
			continue
		}
		s.rep.Dials.Add(1)
		s.converse(ctx, id, c, exp)
	}
}

func (s *soaker) dial(ctx context.Context, id int, exp time.Time) (*websocket.Conn, error) {
	tok, err := auth.MintHS256(s.gw.secret, map[string]any{
		"sub": "soak-" + strconv.Itoa(id), "tenant_id": "soak", "exp": exp.Unix(),
	})
	if err != nil {
		return nil, err
	}
	u := "ws://" + s.gw.listen + "/ws/echo"
	opts := &websocket.DialOptions{HTTPClient: s.dialer, CompressionMode: websocket.CompressionDisabled}
	if id%2 == 0 {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + tok}}
	} else {
		u += "?client=" + strconv.Itoa(id) + "&token=" + url.QueryEscape(tok) // stripped before the upstream
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, u, opts)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	return c, nil
}

// converse runs one connection until it ends, counting why it ended.
func (s *soaker) converse(ctx context.Context, id int, c *websocket.Conn, exp time.Time) {
	defer c.CloseNow()
	// Start at a random phase so the messages spread over each interval.
	tick := time.NewTimer(rand.N(s.o.Interval))
	defer tick.Stop()
	buf := make([]byte, 0, 600)
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			s.closeNormally(id, c, exp, "soak over")
			return
		case <-s.churnC[id]:
			s.rep.Churned.Add(1)
			s.closeNormally(id, c, exp, "churn")
			return
		case <-tick.C:
			tick.Reset(s.o.Interval)
		}
		buf = append(buf[:0], fmt.Sprintf("%d:%d:", id, seq)...)
		for n := rand.IntN(512); n > 0; n-- {
			buf = append(buf, byte('a'+rand.IntN(26)))
		}
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.Write(wctx, websocket.MessageText, buf)
		cancel()
		if err != nil {
			// A close frame may be waiting unread: fetch its code.
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _, rerr := c.Read(rctx)
			cancel()
			if websocket.CloseStatus(rerr) != -1 {
				err = rerr
			}
			s.ended(id, err, exp)
			return
		}
		s.rep.Sent.Add(1)
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		typ, got, err := c.Read(rctx)
		cancel()
		if err != nil {
			s.ended(id, err, exp)
			return
		}
		if typ != websocket.MessageText || !bytes.Equal(got, buf) {
			s.rep.Mismatches.Add(1)
			s.rep.fail("client %d: echo mismatch: sent %d bytes %.24q, got %v %d bytes %.24q", id, len(buf), buf, typ, len(got), got)
			return
		}
		s.rep.Echoed.Add(1)
		if late := time.Since(exp); late > expiryLate {
			s.rep.LateExpiries.Add(1)
			s.rep.fail("client %d: connection still echoing %s after its token expired", id, late.Round(time.Millisecond))
			return
		}
	}
}

// closeNormally closes with code 1000 and expects wsgate to answer in kind,
// unless wsgate's expiry close crossed ours (it may be waiting unread).
func (s *soaker) closeNormally(id int, c *websocket.Conn, exp time.Time, reason string) {
	err := c.Close(websocket.StatusNormalClosure, reason)
	if err == nil {
		return
	}
	if websocket.CloseStatus(err) == closecode.TokenExpired {
		s.ended(id, err, exp)
		return
	}
	s.rep.unexpected(int(websocket.CloseStatus(err)))
	s.rep.fail("client %d: close 1000 (%s): %v", id, reason, err)
}

// ended classifies the error that ended a connection.
func (s *soaker) ended(id int, err error, exp time.Time) {
	code := websocket.CloseStatus(err)
	if code == closecode.TokenExpired {
		if early := time.Until(exp); early > expiryEarly {
			s.rep.EarlyExpiries.Add(1)
			s.rep.fail("client %d: 4001 arrived %s before the token's exp", id, early.Round(time.Millisecond))
			return
		}
		s.rep.Expiries.Add(1)
		return
	}
	s.rep.unexpected(int(code))
	s.rep.fail("client %d: connection ended: %v", id, err)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
