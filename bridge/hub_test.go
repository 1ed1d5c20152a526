package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/wstest"
)

func TestMain(m *testing.M) {
	// rueidis's cluster client starts a topology refresh that sleeps up to
	// 5s after Close before it notices; it ends on its own.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}

func startHub(t *testing.T, url string) *bridge.Hub {
	t.Helper()
	h, err := bridge.New(bridge.Config{URL: url, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, h.Run)
	wstest.WaitFor(t, "hub ready", h.Ready)
	return h
}

func each(t *testing.T, test func(t *testing.T, h *bridge.Hub)) {
	t.Run("memory", func(t *testing.T) { test(t, startHub(t, "")) })
	t.Run("redis", func(t *testing.T) { test(t, startHub(t, wstest.StartRedis(t).URL())) })
}

func recv(t *testing.T, s *bridge.Subscription) *bridge.Message {
	t.Helper()
	select {
	case m, ok := <-s.C():
		if !ok {
			t.Fatalf("subscription ended: %v", s.Err())
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

func TestHubDeliversInOrderAndMarksBinary(t *testing.T) {
	each(t, func(t *testing.T, h *bridge.Hub) {
		ctx := context.Background()
		s, err := h.Subscribe(ctx, []string{"a", "b"}, 100)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := 0; i < 50; i++ {
			h.Publish(ctx, "a", []byte(fmt.Sprint(i)))
		}
		h.Publish(ctx, "b", []byte{0xff, 0xfe})
		for i := 0; i < 50; i++ {
			if m := recv(t, s); m.Channel != "a" || string(m.Payload) != fmt.Sprint(i) || m.Binary {
				t.Fatalf("message %d: %+v", i, m)
			}
		}
		if m := recv(t, s); m.Channel != "b" || !m.Binary {
			t.Errorf("non-UTF-8 payload: %+v, want Binary", m)
		}
		h.Publish(ctx, "c", []byte("not subscribed"))
		s.Close()
		if _, ok := <-s.C(); ok {
			t.Error("C not closed after Close")
		}
		if !errors.Is(s.Err(), bridge.ErrClosed) {
			t.Errorf("Err = %v, want ErrClosed", s.Err())
		}
	})
}

func TestHubDropsOnlyTheSlowSubscriber(t *testing.T) {
	each(t, func(t *testing.T, h *bridge.Hub) {
		ctx := context.Background()
		slow, _ := h.Subscribe(ctx, []string{"x"}, 4)
		fast, _ := h.Subscribe(ctx, []string{"x"}, 100)
		defer fast.Close()
		for i := 0; i < 10; i++ {
			h.Publish(ctx, "x", []byte{byte('0' + i)})
		}
		for i := 0; i < 10; i++ {
			if m := recv(t, fast); m.Payload[0] != byte('0'+i) {
				t.Fatalf("fast subscriber got %q at %d", m.Payload, i)
			}
		}
		n := 0
		for range slow.C() {
			n++
		}
		if n != 4 || !errors.Is(slow.Err(), bridge.ErrSlowConsumer) {
			t.Errorf("slow subscriber got %d then %v, want 4 then ErrSlowConsumer", n, slow.Err())
		}
	})
}

func TestHubUnavailableWithoutRedis(t *testing.T) {
	r := wstest.StartRedis(t)
	h := startHub(t, r.URL())
	r.Kill()
	wstest.WaitFor(t, "not ready", func() bool { return !h.Ready() })
	if _, err := h.Subscribe(context.Background(), []string{"x"}, 1); !errors.Is(err, bridge.ErrUnavailable) {
		t.Errorf("Subscribe while down: %v, want ErrUnavailable", err)
	}
	if err := h.Publish(context.Background(), "x", []byte("y")); !errors.Is(err, bridge.ErrUnavailable) {
		t.Errorf("Publish while down: %v, want ErrUnavailable", err)
	}
}

func TestBadRedisURLIsRefused(t *testing.T) {
	if _, err := bridge.New(bridge.Config{URL: "http://nope"}, zap.NewNop(), nil); err == nil {
		t.Error("an http:// redis URL was accepted")
	}
}

func TestHubSurvivesRedisFlapping(t *testing.T) {
	r := wstest.StartRedis(t)
	h := startHub(t, r.URL())
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		s, err := h.Subscribe(ctx, []string{"flap"}, 10)
		if err != nil {
			t.Fatalf("round %d: subscribe: %v", round, err)
		}
		r.Kill()
		r.Start(t)
		wstest.WaitFor(t, "ready again", h.Ready)
		// The subscriber across the gap is told.
		for range s.C() {
		}
		if !errors.Is(s.Err(), bridge.ErrGap) {
			t.Fatalf("round %d: Err = %v, want ErrGap", round, s.Err())
		}
	}
	s, err := h.Subscribe(ctx, []string{"flap"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wstest.WaitFor(t, "publish after flapping", func() bool { return h.Publish(ctx, "flap", []byte("ok")) == nil })
	if m := recv(t, s); string(m.Payload) != "ok" {
		t.Errorf("after flapping: %q", m.Payload)
	}
}

// Issue 11, finding 11: the first publish after a Redis restart met the dead
// pooled connection and was lost behind an error. Every publish, plain and
// durable, must now succeed once the hub is ready again, and arrive.
func TestPublishAfterRedisRestartIsNotLost(t *testing.T) {
	r := wstest.StartRedis(t)
	h, err := bridge.New(bridge.Config{URL: r.URL(), ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Durable: []bridge.Durable{{Pattern: "dur:*"}}}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, h.Run)
	wstest.WaitFor(t, "hub ready", h.Ready)
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		// Warm several pooled connections, so the restart leaves them dead.
		for i := 0; i < 4; i++ {
			if err := h.Publish(ctx, "warm", []byte("w")); err != nil {
				t.Fatalf("round %d: warm-up publish: %v", round, err)
			}
		}
		r.Kill()
		r.Start(t)
		wstest.WaitFor(t, "ready again", h.Ready)
		s, err := h.Subscribe(ctx, []string{"plain", "dur:1"}, 10)
		if err != nil {
			t.Fatalf("round %d: subscribe: %v", round, err)
		}
		for _, ch := range []string{"plain", "dur:1"} {
			if err := h.Publish(ctx, ch, []byte("after-restart")); err != nil {
				t.Fatalf("round %d: first publish to %s after the restart failed: %v", round, ch, err)
			}
			if m := recv(t, s); string(m.Payload) != "after-restart" || m.Channel != ch {
				t.Fatalf("round %d: got %q on %s", round, m.Payload, m.Channel)
			}
		}
		s.Close()
	}
}

// A subscriber that holds no goroutine learns of each queued message, and
// of the end of its subscription, through its ready callback.
func TestNotifyCallsReadyAfterEachMessageAndAtTheEnd(t *testing.T) {
	each(t, func(t *testing.T, h *bridge.Hub) {
		ctx := context.Background()
		s, err := h.Subscribe(ctx, []string{"n"}, 10)
		if err != nil {
			t.Fatal(err)
		}
		ready := make(chan int, 10)
		s.Notify(func(fanout int) { ready <- fanout*100 + len(s.C()) })
		wait := func(what string) int {
			t.Helper()
			select {
			case n := <-ready:
				return n
			case <-time.After(5 * time.Second):
				t.Fatalf("ready not called %s", what)
				return 0
			}
		}
		for i := range 3 {
			if err := h.Publish(ctx, "n", []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
			if n := wait("after a publish"); n != 101 {
				t.Fatalf("ready saw fanout %d and %d queued messages, want fanout 1 and the 1 just queued", n/100, n%100)
			}
			if m := recv(t, s); string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("got %q, want %d", m.Payload, i)
			}
		}
		s.Close()
		if n := wait("at the end"); n/100 != 0 {
			t.Fatalf("ready at the end: fanout %d, want 0", n/100)
		}
		if _, open := <-s.C(); open || !errors.Is(s.Err(), bridge.ErrClosed) {
			t.Fatalf("after Close: queue open %v, err %v", open, s.Err())
		}
	})
}
