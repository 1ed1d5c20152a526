package proxy

import (
	"context"
	"time"

	"github.com/coder/websocket"
)

// leg is one side of a session (the client, or the upstream) as the
// session drives it, whatever carries it: a wire wsgate frames itself
// (wire.go, relayed by relay.go) or a coder/websocket Conn (conn.go, with
// its message pumps). Reading is the pump's; these are what the rest of the
// session does to a leg. A transport is chosen once, in newSession.
type leg interface {
	// deliver writes channel messages in order, each as one frame, giving
	// up once the peer has not taken them for timeout: then it returns an
	// error matching os.ErrDeadlineExceeded. Called by one goroutine at a
	// time (the channel writer).
	deliver(batch []delivery, timeout time.Duration) error
	// ping sends a ping and waits for a pong until ctx ends.
	ping(ctx context.Context) error
	// closeHandshake sends a close frame with code and reason and ends the
	// connection once the peer has answered or within has passed. brief:
	// the peer sent bytes that were refused or stopped reading; its stream
	// is not waited on.
	closeHandshake(code websocket.StatusCode, reason string, within time.Duration, brief bool)
	// drop ends the connection at once, cutting a close handshake short.
	drop()
}

var (
	_ leg = (*wire)(nil)
	_ leg = (*connLeg)(nil)
)

// Bounds on one leg's close handshake.
const (
	closeHandshakeTimeout = 5 * time.Second
	// The stream of a peer that broke the protocol or overran the message
	// limit is garbage from the refused frame on; RFC 6455 §7.1.7 lets an
	// endpoint drop such a connection at once. It gets a moment to read the
	// close frame and answer.
	brokenPeerTimeout = time.Second
)
