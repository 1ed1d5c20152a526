package proxy

import (
	"context"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/query"
)

// resume reads what a client reconnecting with ?since= missed. It runs
// after the subscription is live, so nothing falls between the replay and
// the live stream; replayLoop drops the overlap.
func (h *Handler) resume(ctx context.Context, r *http.Request, hs *handshake, channel string) error {
	since, _ := query.Values(r.URL.RawQuery, SinceParam)
	if len(since) == 0 || since[0] == "" {
		return nil
	}
	msgs, rec, err := h.hub.Replay(ctx, channel, since[0])
	if err != nil {
		return fmt.Errorf("%w: %v", bridge.ErrUnavailable, err)
	}
	hs.recovery, hs.replay = &rec, msgs
	return nil
}

// sendReplay writes the recovery control message and the replayed messages,
// and returns the last position delivered.
func (s *session) sendReplay(rec *bridge.Recovery, msgs []*bridge.Message) (bridge.Position, error) {
	last := rec.Since // the client has everything up to here already
	write := func(b []byte) error {
		return s.writeTimed(s.client, channelToClient, func(ctx context.Context) error {
			return s.client.Write(ctx, websocket.MessageText, b)
		})
	}
	if err := write(rec.Control()); err != nil {
		return last, err
	}
	for _, m := range msgs {
		if err := write(m.Envelope); err != nil {
			return last, err
		}
		s.count(channelToClient, len(m.Envelope))
		last = m.Pos
	}
	return last, nil
}
