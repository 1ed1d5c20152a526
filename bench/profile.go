package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// profile runs `bench gateway` (wsgate's Handler plus pprof) under the
// 64-connection closed loop and then with 5,000 idle pairs, and saves CPU,
// heap and goroutine profiles plus their `go tool pprof -top` summaries.
func profile(e *env, dir string, logf func(string, ...any)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	up, err := e.startUpstream("prof-upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	gw, err := e.startGatewayVariant("prof-gateway", up, "")
	if err != nil {
		return err
	}
	defer gw.stop()
	ctx := context.Background()
	tok := e.tokens["HS256"]

	for _, size := range []int{64, 4 << 10} {
		conns, err := openConns(ctx, gw, tok, 64, 8)
		if err != nil {
			return err
		}
		var res loadResult
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); res = closedLoop(gw, conns, make([]byte, size), time.Second, 11*time.Second) }()
		time.Sleep(1500 * time.Millisecond)
		name := fmt.Sprintf("cpu-64conns-%dB", size)
		logf("profiling CPU for 10s under 64 conns × %d B", size)
		if err := fetch(gw.admin+"/debug/pprof/profile?seconds=10", filepath.Join(dir, name+".pprof")); err != nil {
			return err
		}
		wg.Wait()
		closeAll(conns)
		logf("  %.0f round trips/s, gateway CPU %.0f%%", float64(res.roundTrips)/res.elapsed.Seconds(), 100*res.cpu/res.elapsed.Seconds())
		top(dir, name, "-top", "-nodecount=35")
		top(dir, name+"-cum", "-top", "-cum", "-nodecount=35", filepath.Join(dir, name+".pprof"))
	}
	// Connection setup: dial, upgrade, one echo, close, from 8 dialers.
	{
		r := &runner{e: e, p: params{setupDur: 11 * time.Second, setupDialers: 8}}
		var n int64
		var elapsed time.Duration
		var cpu float64
		var serr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, elapsed, cpu, serr = r.setupWindow(setupCase{"gateway", gw, tok})
		}()
		time.Sleep(500 * time.Millisecond)
		logf("profiling CPU for 10s under connection setup (8 dialers)")
		if err := fetch(gw.admin+"/debug/pprof/profile?seconds=10", filepath.Join(dir, "cpu-setup.pprof")); err != nil {
			return err
		}
		wg.Wait()
		if serr != nil {
			return serr
		}
		logf("  %.0f conns/s, %.0f µs gateway CPU per conn", float64(n)/elapsed.Seconds(), 1e6*cpu/float64(n))
		top(dir, "cpu-setup", "-top", "-nodecount=35")
		top(dir, "cpu-setup-cum", "-top", "-cum", "-nodecount=60", filepath.Join(dir, "cpu-setup.pprof"))
	}
	if err := profileFanout(e, dir, up, logf); err != nil {
		return err
	}
	time.Sleep(time.Second)
	base := rssBytes(gw.pids())
	const n = 5000
	logf("opening %d idle pairs", n)
	conns, err := openConns(ctx, gw, tok, n, 16)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	time.Sleep(2 * time.Second)
	logf("  RSS +%.1f KiB per pair", float64(rssBytes(gw.pids())-base)/n/1024)
	if err := fetch(gw.admin+"/debug/pprof/heap?gc=1", filepath.Join(dir, "heap-idle.pprof")); err != nil {
		return err
	}
	if err := fetch(gw.admin+"/debug/pprof/goroutine?debug=1", filepath.Join(dir, "goroutines-idle.txt")); err != nil {
		return err
	}
	top(dir, "heap-idle", "-top", "-sample_index=inuse_space", "-nodecount=30")
	logf("profiles and summaries in %s", dir)
	return nil
}

func fetch(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// top writes `go tool pprof ARGS PROFILE` to dir/name.txt. The profile is
// dir/name.pprof unless the last arg names one.
func top(dir, name string, args ...string) {
	prof := filepath.Join(dir, name+".pprof")
	if n := len(args); n > 0 && filepath.Ext(args[n-1]) == ".pprof" {
		prof, args = args[n-1], args[:n-1]
	}
	out, err := exec.Command("go", append(append([]string{"tool", "pprof"}, args...), prof)...).CombinedOutput()
	if err != nil {
		out = append(out, []byte("\n"+err.Error())...)
	}
	os.WriteFile(filepath.Join(dir, name+".txt"), out, 0o644)
}

// profileFanout profiles a Redis-bridged gateway delivering 1 channel to
// 1,000 clients, with the bench's windowed publisher.
func profileFanout(e *env, dir string, up *upstream, logf func(string, ...any)) error {
	if _, err := exec.LookPath("redis-server"); err != nil {
		logf("no redis-server: skipping the fan-out profile")
		return nil
	}
	redis, addr, err := e.startRedis()
	if err != nil {
		return err
	}
	defer redis.stop()
	gw, err := e.startGatewayVariant("prof-gateway-redis", up, "redis://"+addr+"/0")
	if err != nil {
		return err
	}
	defer gw.stop()
	ctx := context.Background()
	pub, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		return err
	}
	defer pub.Close()
	const n = 1000
	conns, err := openStreamConns(ctx, gw, "many", e.tokens["HS256"], n)
	if err != nil {
		return err
	}
	w := newFanWindow(n, 4)
	waitReaders := readAll(ctx, conns, w, false)
	var delivered int64
	var elapsed time.Duration
	var perr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		delivered, elapsed, perr = publishWindow(ctx, func(ctx context.Context, msg string) error {
			return pub.Do(ctx, pub.B().Publish().Channel("bench:many").Message(msg).Build()).Error()
		}, w, time.Second, 11*time.Second)
	}()
	time.Sleep(1500 * time.Millisecond)
	logf("profiling CPU for 10s under fan-out 1→%d", n)
	ferr := fetch(gw.admin+"/debug/pprof/profile?seconds=10", filepath.Join(dir, "cpu-fanout.pprof"))
	wg.Wait()
	closeAll(conns)
	waitReaders()
	if ferr != nil {
		return ferr
	}
	if perr != nil {
		return perr
	}
	logf("  %.0f deliveries/s", float64(delivered)/elapsed.Seconds())
	top(dir, "cpu-fanout", "-top", "-nodecount=35")
	top(dir, "cpu-fanout-cum", "-top", "-cum", "-nodecount=60", filepath.Join(dir, "cpu-fanout.pprof"))
	return nil
}
