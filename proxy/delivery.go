package proxy

// Channel delivery: subscription messages (and a resuming client's replay)
// go to the client leg in order, in batches.

import (
	"errors"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/closecode"
)

// channelToClient delivers subscription messages to the client in order.
// Every message already queued when it wakes goes out in one batch (one
// writev on a wire client).
func (s *session) channelToClient() {
	var last bridge.Position // durable routes: the last position delivered
	if s.recovery != nil {
		var err error
		if last, err = s.sendReplay(s.recovery, s.replay); err != nil {
			return
		}
		s.replay = nil
	}
	durable := s.rt.cfg.History != nil
	var arr [maxBatch]delivery
	c := s.sub.C()
	for m := range c {
		batch := arr[:0]
		for open := true; open; {
			if durable && m.Envelope != nil {
				if last.Epoch != "" && m.Pos.Epoch == last.Epoch && !m.Pos.After(last) {
					m = nil // already replayed
				} else if m.Pos.Epoch != "" {
					last = m.Pos
				}
			}
			if m != nil {
				batch = append(batch, toDelivery(m, durable))
			}
			if len(batch) == maxBatch {
				break
			}
			select {
			case m, open = <-c:
			default:
				open = false
			}
		}
		if len(batch) > 0 && s.deliver(batch) != nil {
			return
		}
	}
	switch err := s.sub.Err(); {
	case errors.Is(err, bridge.ErrSlowConsumer):
		s.raise(closecode.SlowConsumerDropped)
	case errors.Is(err, bridge.ErrGap):
		s.raise(closecode.SubscriptionLost)
	}
}

// toDelivery is how m goes to a client: its envelope on a durable route,
// else its payload, as text unless it is not UTF-8.
func toDelivery(m *bridge.Message, durable bool) delivery {
	if durable && m.Envelope != nil {
		return delivery{payload: m.Envelope}
	}
	return delivery{binary: m.Binary, payload: m.Payload}
}

// deliver writes batch to the client and counts it. A failed write ends
// the session (or leaves that to the reader that knows why).
func (s *session) deliver(batch []delivery) error {
	if err := s.client.deliver(batch, s.h.cfg.WriteTimeout); err != nil {
		s.writeFailed(sideClient, err)
		return err
	}
	for _, d := range batch {
		s.count(channelToClient, len(d.payload))
	}
	return nil
}
