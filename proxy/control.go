package proxy

import (
	"context"
	"time"

	"github.com/wsgate/wsgate/internal/closecode"
)

// controlBudget counts the pings and pongs one peer sends on its leg against
// Limits.ControlFramesPerSecond. Pings cost a pong each and pongs a parse:
// without a budget a peer could make wsgate spend a CPU core answering them,
// outside limits.messages_per_second. When it is spent, the session ends
// with flood (1008 to that peer).
//
// Owned by the leg's reader: the wire's pump, or coder/websocket's read
// path, which calls its hooks under the Conn's read lock.
type controlBudget struct {
	rate  float64 // <= 0: unlimited
	flood closecode.Event
	b     bucket
	// s is set by newSession before the leg is first read; nil while the
	// handshake still owns the leg (a refused handshake's close).
	s *session
}

// newControlBudget is a budget for the leg on side.
func newControlBudget(rate float64, side closecode.Side) controlBudget {
	c := controlBudget{rate: rate, flood: closecode.ClientControlFlood}
	if side == sideUpstream {
		c.flood = closecode.UpstreamControlFlood
	}
	return c
}

// budgetControl gives the coder/websocket leg on side a budget, kept in hs
// for newSession, and returns the hooks that spend it.
func (hs *handshake) budgetControl(h *Handler, side closecode.Side) (onPing func(context.Context, []byte) bool, onPong func(context.Context, []byte)) {
	c := newControlBudget(h.cfg.Limits.ControlFramesPerSecond, side)
	if side == sideUpstream {
		hs.upstreamControl = &c
	} else {
		hs.clientControl = &c
	}
	return c.hooks()
}

// take counts one control frame. Over the budget it raises the flood event
// and reports false: the frame is not answered.
func (c *controlBudget) take() bool {
	if c.rate <= 0 || c.b.take(time.Now(), c.rate) {
		return true
	}
	if c.s != nil {
		c.s.raise(c.flood)
	}
	return false
}

// hooks are coder/websocket's OnPingReceived and OnPongReceived for the leg:
// a ping over the budget gets no pong.
func (c *controlBudget) hooks() (onPing func(context.Context, []byte) bool, onPong func(context.Context, []byte)) {
	return func(context.Context, []byte) bool { return c.take() },
		func(context.Context, []byte) { c.take() }
}
