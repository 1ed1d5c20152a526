package bridge_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/bridge"
)

// BenchmarkFanout publishes through the in-process broker to N subscribers
// of one channel, each drained by its own goroutine as a session's
// channelToClient would. One op is one publish; ns/delivery divides the
// time by N. The publisher waits for every subscriber after each batch, so
// no queue overflows and the figure is sustained throughput, not queueing.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	const batch = 128 // < the queue length, so a waiting publisher never overflows one
	hub, err := bridge.New(bridge.Config{}, zap.NewNop(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); hub.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	var delivered atomic.Int64
	for range n {
		sub, err := hub.Subscribe(ctx, []string{"bench"}, 2*batch)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			for range sub.C() {
				delivered.Add(1)
			}
		}()
	}
	payload := make([]byte, 100)
	published := int64(0)
	waitAll := func() {
		for want := published * int64(n); delivered.Load() < want; {
			runtime.Gosched()
		}
	}
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if err := hub.Publish(ctx, "bench", payload); err != nil {
			b.Fatal(err)
		}
		if published++; published%batch == 0 {
			waitAll()
		}
	}
	waitAll()
	elapsed := time.Since(start)
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(published*int64(n)), "ns/delivery")
	b.ReportMetric(float64(published*int64(n))/elapsed.Seconds(), "deliveries/s")
}
