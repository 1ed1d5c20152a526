package proxy

import (
	"context"
	"fmt"
	"net/http"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/closecode"
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

// sendReplay writes the recovery control message and the replayed
// messages, a page at a time: the next page is read from history only once
// the client has taken the last, so a resuming client that does not read
// holds one page, not its whole gap. It returns the last position
// delivered.
func (s *session) sendReplay(rec *bridge.Recovery, cur *bridge.ReplayCursor) (bridge.Position, error) {
	last := rec.Since // the client has everything up to here already
	batch := append(make([]delivery, 0, maxBatch), delivery{payload: rec.Control()})
	for {
		msgs, err := cur.Next(s.ctx)
		if err != nil {
			s.raise(closecode.SubscriptionLost)
			return last, err
		}
		for _, m := range msgs {
			if len(batch) == maxBatch {
				if err := s.deliver(batch); err != nil {
					return last, err
				}
				batch = batch[:0]
			}
			batch = append(batch, delivery{payload: m.Envelope})
			last = m.Pos
		}
		if len(batch) > 0 {
			if err := s.deliver(batch); err != nil {
				return last, err
			}
			batch = batch[:0]
		}
		if len(msgs) == 0 {
			return last, nil
		}
	}
}
