package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// memoryBroker delivers within the process: the embedded default, and a
// single replica with no Redis. A mutex orders concurrent publishers, so all
// subscribers of a channel see the same order. Durable channels keep a ring
// of recent messages with the same semantics as the Redis streams.
type memoryBroker struct {
	hub *Hub

	mu    sync.Mutex
	rings map[string]*ring // guarded by mu
}

// ring is one durable channel's history. Its epoch is new whenever the ring
// is created, as a Redis stream's is after a restart or expiry.
type ring struct {
	epoch      string
	seq        uint64
	entries    []historyEntry
	maxDeleted streamID
	expires    time.Time
}

// run sweeps expired rings until ctx ends, so history memory returns once
// a channel's TTL has passed (a ring is otherwise only replaced when its
// channel is published to again).
func (b *memoryBroker) run(ctx context.Context) error {
	t := time.NewTicker(b.sweepEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			b.sweep(now)
		}
	}
}

// sweepEvery is a quarter of the shortest durable TTL, within [100ms, 30s].
func (b *memoryBroker) sweepEvery() time.Duration {
	every := 30 * time.Second
	for _, d := range b.hub.cfg.Durable {
		every = min(every, d.withDefaults().TTL/4)
	}
	return max(every, 100*time.Millisecond)
}

func (b *memoryBroker) sweep(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch, r := range b.rings {
		if now.After(r.expires) {
			delete(b.rings, ch)
		}
	}
}

func (b *memoryBroker) ready() bool                        { return true }
func (b *memoryBroker) sync(context.Context, string) error { return nil }
func (b *memoryBroker) enqueue(string)                     {}

func (b *memoryBroker) publish(_ context.Context, channel string, payload []byte) error {
	p := append([]byte(nil), payload...) // subscribers keep it after the caller reuses payload
	b.mu.Lock()
	b.hub.dispatch(channel, p)
	b.mu.Unlock()
	return nil
}

func (b *memoryBroker) publishDurable(_ context.Context, channel string, payload []byte, d Durable) error {
	p := append([]byte(nil), payload...)
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.ringLocked(channel, now)
	r.seq++
	id := streamID{ms: uint64(now.UnixMilli()), seq: r.seq}
	r.entries = append(r.entries, historyEntry{id: id, payload: p})
	if over := len(r.entries) - d.Size; over > 0 {
		r.maxDeleted = r.entries[over-1].id
		r.entries = append(r.entries[:0:0], r.entries[over:]...)
	}
	cut := uint64(now.Add(-d.TTL).UnixMilli())
	for len(r.entries) > 0 && r.entries[0].id.ms < cut {
		r.maxDeleted = r.entries[0].id
		r.entries = r.entries[1:]
	}
	r.expires = now.Add(d.TTL)
	b.hub.dispatch(channel, markPayload(Position{Epoch: r.epoch, ID: id}.String(), p))
	return nil
}

// ringLocked returns channel's ring, starting a new epoch if there is none
// or it expired. b.mu must be held.
func (b *memoryBroker) ringLocked(channel string, now time.Time) *ring {
	if b.rings == nil {
		b.rings = make(map[string]*ring)
	}
	r := b.rings[channel]
	if r == nil || now.After(r.expires) {
		r = &ring{epoch: newEpoch()}
		b.rings[channel] = r
	}
	return r
}

func (b *memoryBroker) historyInfo(_ context.Context, channel string, since streamID) (historyInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rings[channel]
	if r == nil || time.Now().After(r.expires) {
		return historyInfo{}, nil
	}
	info := historyInfo{epoch: r.epoch, maxDeleted: r.maxDeleted}
	for _, e := range r.entries {
		if since.less(e.id) {
			info.count++
			info.bytes += int64(len(e.payload))
			info.last = e.id
		}
	}
	return info, nil
}

func (b *memoryBroker) historyPage(_ context.Context, channel string, after, until streamID, maxCount, maxBytes int) ([]historyEntry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rings[channel]
	if r == nil {
		return nil, nil
	}
	var out []historyEntry
	bytes := 0
	for _, e := range r.entries {
		if !after.less(e.id) {
			continue
		}
		if until.less(e.id) || len(out) >= maxCount || bytes >= maxBytes {
			break
		}
		out = append(out, e) // payloads are never written after publish: shared
		bytes += len(e.payload)
	}
	return out, nil
}

func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
