package bridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/wstest"
)

// drain reads a replay cursor to its end.
func drain(t *testing.T, cur *bridge.ReplayCursor) []*bridge.Message {
	t.Helper()
	var all []*bridge.Message
	for {
		page, err := cur.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
	}
}

func startDurableHub(t *testing.T, url string, d bridge.Durable) *bridge.Hub {
	t.Helper()
	h, err := bridge.New(bridge.Config{URL: url, Durable: []bridge.Durable{d}}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, h.Run)
	wstest.WaitFor(t, "hub ready", h.Ready)
	return h
}

func eachDurable(t *testing.T, d bridge.Durable, test func(t *testing.T, h *bridge.Hub)) {
	t.Run("memory", func(t *testing.T) { test(t, startDurableHub(t, "", d)) })
	t.Run("redis", func(t *testing.T) { test(t, startDurableHub(t, wstest.StartRedis(t).URL(), d)) })
}

// Issue 12, finding 2: a resume loaded every retained entry at once. It now
// reads pages of at most 64 entries or 256 KiB, in order, nothing lost.
func TestReplayReadsHistoryInBoundedPages(t *testing.T) {
	eachDurable(t, bridge.Durable{Pattern: "dur:*", Size: 1000}, func(t *testing.T, h *bridge.Hub) {
		ctx := context.Background()
		s, err := h.Subscribe(ctx, []string{"dur:1"}, 1024)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		payload := bytes.Repeat([]byte("x"), 16<<10)
		var first bridge.Position
		for i := 0; i < 300; i++ {
			if err := h.Publish(ctx, "dur:1", append([]byte(fmt.Sprintf("%04d", i)), payload...)); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, s); i == 0 {
				first = m.Pos
			}
		}
		cur, rec, err := h.Replay(ctx, "dur:1", first.String())
		if err != nil || !rec.Recovered || rec.Replayed != 299 {
			t.Fatalf("replay: %v %+v", err, rec)
		}
		n := 0
		for {
			page, err := cur.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			bytes := 0
			for _, m := range page {
				n++
				if want := fmt.Sprintf("%04d", n); string(m.Payload[:4]) != want {
					t.Fatalf("replayed %q, want %s", m.Payload[:4], want)
				}
				bytes += len(m.Payload)
			}
			if len(page) > 64 || bytes > 256<<10+len(payload)+4 {
				t.Fatalf("a page of %d messages, %d bytes", len(page), bytes)
			}
		}
		if n != 299 {
			t.Fatalf("replayed %d messages, want 299", n)
		}
	})
}

// Issue 12, findings 2 and 3: a cap on one replay's bytes, and on the size
// of a message kept in history.
func TestReplayAndHistoryQuotas(t *testing.T) {
	eachDurable(t, bridge.Durable{Pattern: "dur:*", MaxReplayBytes: 100 << 10, MaxMessageBytes: 8 << 10}, func(t *testing.T, h *bridge.Hub) {
		ctx := context.Background()
		s, err := h.Subscribe(ctx, []string{"dur:q"}, 1024)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		big := bytes.Repeat([]byte("b"), 8<<10+1)
		if err := h.Publish(ctx, "dur:q", big); !errors.Is(err, bridge.ErrTooLarge) {
			t.Fatalf("a message over max_message_bytes: %v, want ErrTooLarge", err)
		}
		if err := h.Publish(ctx, "plain", big); err != nil {
			t.Fatalf("a non-durable channel has no history quota: %v", err)
		}
		var first bridge.Position
		for i := 0; i < 30; i++ { // 30 x 8 KiB: over the 100 KiB replay cap
			if err := h.Publish(ctx, "dur:q", bytes.Repeat([]byte("m"), 8<<10)); err != nil {
				t.Fatal(err)
			}
			if m := recv(t, s); i == 0 {
				first = m.Pos
			}
		}
		cur, rec, err := h.Replay(ctx, "dur:q", first.String())
		if err != nil || rec.Recovered || rec.Reason != "too_large" || cur != nil {
			t.Fatalf("an over-budget gap: %v %+v", err, rec)
		}
		if got := string(rec.Control()); got != `{"type":"wsgate.recovery","recovered":false,"reason":"too_large"}` {
			t.Errorf("control: %s", got)
		}
	})
}

// Issue 12, finding 3: in-process rings were never deleted after their TTL.
// The sweeper returns their memory.
func TestMemoryHistoryIsSweptAfterTTL(t *testing.T) {
	// A TTL the 40 publishes fit in even on a loaded machine under -race.
	const ttl = 4 * time.Second
	h := startDurableHub(t, "", bridge.Durable{Pattern: "dur:*", TTL: ttl, MaxMessageBytes: 2 << 20})
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	payload := bytes.Repeat([]byte("p"), 1<<20)
	for i := 0; i < 40; i++ { // 40 MB over 40 session channels
		if err := h.Publish(ctx, fmt.Sprintf("dur:s%d", i), payload); err != nil {
			t.Fatal(err)
		}
	}
	full := heap()
	if full-before < 30<<20 {
		t.Fatalf("history did not take the memory it should: %d -> %d", before, full)
	}
	for deadline := time.Now().Add(ttl + 5*time.Second); heap() >= before+5<<20; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("history memory not returned %v after its TTL: %d -> %d", 5*time.Second, before, heap())
		}
	}
}
