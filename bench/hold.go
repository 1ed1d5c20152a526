package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// hold opens holdPairs pairs through a fresh wsgate and upstream, then has
// every connection send a 64 B message once a second for holdDur. It
// passes when every pair is still open at the end and no message failed.
func (r *runner) hold() error {
	ctx := context.Background()
	n := r.p.holdPairs
	up, err := r.e.startUpstream("hold-upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	t, err := r.e.startWsgate("hold-wsgate", wsgateOpts{upstream: up})
	if err != nil {
		return err
	}
	defer t.stop()
	time.Sleep(300 * time.Millisecond)
	base := rssBytes(t.pids())
	t0 := time.Now()
	conns, err := openConns(ctx, t, r.e.tokens["HS256"], n, 32)
	if err != nil {
		r.res.Extra["hold_pairs_target"] = float64(n)
		r.res.Extra["hold_pairs_opened"] = 0
		return fmt.Errorf("hold: %w", err)
	}
	defer closeAll(conns)
	r.log("  hold: %d pairs open in %.1fs", n, time.Since(t0).Seconds())

	var sent, failed atomic.Int64
	lats := make([][]float64, n)
	stop := time.Now().Add(r.p.holdDur)
	msg := make([]byte, 64)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(rand.N(time.Second)) // spread the sends over each second
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				if time.Now().After(stop) {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				d, err := rtt(rctx, c, msg)
				cancel()
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					return
				}
				lats[i] = append(lats[i], micros(d))
				<-tick.C
			}
		}()
	}
	// Sample wsgate midway, under traffic.
	time.Sleep(r.p.holdDur / 2)
	active := t.metric("wsgate_connections_active")
	rss := rssBytes(t.pids()) - base
	gor := t.metric("go_goroutines")
	cpu0 := cpuSeconds(t.pids())
	time.Sleep(r.p.holdDur / 4)
	cpu := (cpuSeconds(t.pids()) - cpu0) / (r.p.holdDur / 4).Seconds()
	wg.Wait()
	activeEnd := t.metric("wsgate_connections_active")

	var all []float64
	for _, l := range lats {
		all = append(all, l...)
	}
	s := sortedCopy(all)
	x := r.res.Extra
	x["hold_pairs_target"] = float64(n)
	x["hold_pairs_active_midway"] = active
	x["hold_pairs_active_end"] = activeEnd
	x["hold_seconds"] = r.p.holdDur.Seconds()
	x["hold_messages"] = float64(sent.Load())
	x["hold_errors"] = float64(failed.Load())
	x["hold_rtt_p50_us"] = pct(s, 50)
	x["hold_rtt_p90_us"] = pct(s, 90)
	x["hold_rtt_p99_us"] = pct(s, 99)
	x["hold_rtt_max_us"] = pct(s, 100)
	x["hold_wsgate_rss_kib_per_pair"] = float64(rss) / float64(n) / 1024
	x["hold_wsgate_goroutines"] = gor
	x["hold_wsgate_cpu_pct"] = 100 * cpu
	r.log("  hold: %d active, %d msgs, %d errors, p50 %.0fµs p99 %.0fµs, %.1f KiB/pair, wsgate CPU %.0f%%",
		int(activeEnd), sent.Load(), failed.Load(), pct(s, 50), pct(s, 99), float64(rss)/float64(n)/1024, 100*cpu)
	return nil
}
