package proxy

import (
	"errors"
	"sync"
	"time"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/closecode"
)

// errPublishRate ends a session whose user spent its publish byte rate.
var errPublishRate = errors.New("publish byte rate exceeded")

// byteBudget is a token bucket per key counted in bytes: the publish byte
// rate of each (tenant, user) across all their connections. Idle keys are
// swept lazily.
type byteBudget struct {
	rate, burst float64 // rate < 0: unlimited
	mu          sync.Mutex
	m           map[string]*byteBucket // guarded by mu
	swept       time.Time              // guarded by mu
}

type byteBucket struct {
	tokens float64
	last   time.Time
}

func newByteBudget(rate float64, minBurst int64) *byteBudget {
	return &byteBudget{rate: rate, burst: max(2*rate, float64(minBurst)), m: make(map[string]*byteBucket)}
}

// spend takes n bytes from key's bucket and reports whether they were there.
func (b *byteBudget) spend(key string, n int, now time.Time) bool {
	if b.rate < 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) > 4096 && now.Sub(b.swept) > 10*time.Second {
		refill := time.Duration(b.burst / b.rate * float64(time.Second))
		for k, bk := range b.m {
			if now.Sub(bk.last) > refill {
				delete(b.m, k) // full again: no state to keep
			}
		}
		b.swept = now
	}
	bk := b.m[key]
	if bk == nil {
		bk = &byteBucket{tokens: b.burst, last: now}
		b.m[key] = bk
	}
	bk.tokens = min(b.burst, bk.tokens+now.Sub(bk.last).Seconds()*b.rate)
	bk.last = now
	if bk.tokens < float64(n) {
		return false
	}
	bk.tokens -= float64(n)
	return true
}

// publishClose is the close a failed publish earns: a message too big for
// its channel's history is the client's (1009); anything else is the
// broker's, and the client may retry later (1013).
func publishClose(err error) closecode.Event {
	if errors.Is(err, bridge.ErrTooLarge) {
		return closecode.PublishTooBig
	}
	return closecode.PublishFailed
}
