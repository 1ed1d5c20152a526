package limit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/limit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, url string) *limit.Redis {
	t.Helper()
	l, err := limit.New(url, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, l.Run)
	return l
}

func TestCapsAreFleetWide(t *testing.T) {
	r := wstest.StartRedis(t)
	a, b := start(t, r.URL()), start(t, r.URL()) // two replicas
	ctx := context.Background()
	waitConnected(t, r, a, "a")
	waitConnected(t, r, b, "b")

	relA, err := a.Acquire(ctx, []string{"user:alice"}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	relB, err := b.Acquire(ctx, []string{"user:alice"}, []int{2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, []string{"user:alice"}, []int{2}); !errors.Is(err, limit.ErrLimit) {
		t.Errorf("third connection across replicas: %v, want ErrLimit", err)
	}
	relA()
	relC, err := b.Acquire(ctx, []string{"user:alice"}, []int{2})
	if err != nil {
		t.Errorf("after a release: %v", err)
	}
	relB()
	relC()
	if out, _ := r.Do("ZCARD", "wsgate:conns:{user:alice}"); out != "0" {
		t.Errorf("entries left after every release: %s", out)
	}
	// A cap on the second key refuses, and releases the first.
	hold, _ := a.Acquire(ctx, []string{"tenant:t1"}, []int{1})
	if _, err := b.Acquire(ctx, []string{"user:bob", "tenant:t1"}, []int{5, 1}); !errors.Is(err, limit.ErrLimit) {
		t.Errorf("tenant cap: %v", err)
	}
	if out, _ := r.Do("ZCARD", "wsgate:conns:{user:bob}"); out != "0" {
		t.Errorf("refused acquire kept the user slot: %s", out)
	}
	hold()
}

func TestHandshakeRateIsFleetWide(t *testing.T) {
	r := wstest.StartRedis(t)
	a, b := start(t, r.URL()), start(t, r.URL())
	ctx := context.Background()
	waitConnected(t, r, a, "a")
	waitConnected(t, r, b, "b")
	allowed := 0
	for i := 0; i < 10; i++ {
		l := a
		if i%2 == 1 {
			l = b
		}
		if l.Allow(ctx, "ip:198.51.100.9", 2) { // burst 4 per two-second window, shared
			allowed++
		}
	}
	if allowed > 4 || allowed < 1 {
		t.Errorf("%d of 10 handshakes allowed across two replicas, want at most 4", allowed)
	}
}

// waitConnected waits until l has reached Redis (it fails open before).
func waitConnected(t *testing.T, r *wstest.Redis, l *limit.Redis, name string) {
	t.Helper()
	key := "probe-" + name
	wstest.WaitFor(t, name+" connected", func() bool {
		rel, err := l.Acquire(context.Background(), []string{key}, []int{100})
		if err != nil {
			return false
		}
		out, _ := r.Do("EXISTS", "wsgate:conns:{"+key+"}")
		rel()
		return out == "1"
	})
}
