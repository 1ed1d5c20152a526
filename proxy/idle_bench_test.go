package proxy_test

import (
	"context"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// BenchmarkIdlePairs opens 1,000 client↔upstream pairs through wsgate on a
// passthrough route and leaves them idle, then reports what each pair costs
// the proxy: live heap bytes and goroutines, after subtracting the same
// 1,000 connections made directly to the upstream (the clients' and the
// upstream's own share) in the same run. One op is one whole measurement.
func BenchmarkIdlePairs(b *testing.B) {
	const pairs = 1000
	up := wstest.NewUpstream(b)
	up.Serve = wstest.Hold
	gw := benchGateway(b, up, func(c *proxy.Config) {
		c.Limits.MaxConnectionsPerUser, c.Limits.HandshakesPerSecondPerIP, c.Limits.HandshakesPerSecondPerUser = -1, -1, -1
	})
	tok := wstest.Token(b, "alice", nil)
	hdr := http.Header{"Authorization": {"Bearer " + tok}}

	open := func(url string) (heap, stack, goroutines float64) {
		before, stack0 := liveHeap()
		g0 := runtime.NumGoroutine()
		conns := make([]*websocket.Conn, 0, pairs)
		for range pairs {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		time.Sleep(2500 * time.Millisecond) // let handshake goroutines end, and legs park (after 1–2 s idle)
		after, stack1 := liveHeap()
		heap, stack = float64(after-before)/pairs, float64(stack1-stack0)/pairs
		goroutines = float64(runtime.NumGoroutine()-g0) / pairs
		for _, c := range conns {
			c.CloseNow()
		}
		return heap, stack, goroutines
	}
	var heap, stack, gor float64
	for b.Loop() {
		dh, ds, dg := open(up.WSURL() + "/echo")
		ph, ps, pg := open(gw + "/ws/echo")
		heap, stack, gor = ph-dh, ps-ds, pg-dg
	}
	b.ReportMetric(heap, "heap-B/pair")
	b.ReportMetric(stack, "stack-B/pair")
	b.ReportMetric(gor, "goroutines/pair")
}

// liveHeap is the live heap and the goroutine stacks in use, after a GC.
func liveHeap() (heap, stacks uint64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}
