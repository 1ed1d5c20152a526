package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// params sizes a run; quick shrinks every phase to a smoke test.
type params struct {
	rounds       int
	latSamples   int // round trips per target, size and round
	latBlock     int // consecutive round trips on one target before moving on
	loadConns    int
	loadDur      time.Duration
	bigDur       time.Duration
	idlePairs    int
	idleRounds   int
	setupDur     time.Duration
	setupDialers int
	fanDur       time.Duration
	fanClients   int
	holdPairs    int
	holdDur      time.Duration
	bigPairs     int // idle pairs held by one wsgate in the big idle phase
}

var fullParams = params{
	rounds: 5, latSamples: 2000, latBlock: 100,
	loadConns: 64, loadDur: 4 * time.Second, bigDur: 3 * time.Second,
	idlePairs: 5000, idleRounds: 3,
	setupDur: 3 * time.Second, setupDialers: 8,
	fanDur: 3 * time.Second, fanClients: 1000,
	holdPairs: 9000, holdDur: 20 * time.Second,
	bigPairs: 50000,
}

var quickParams = params{
	rounds: 3, latSamples: 300, latBlock: 50,
	loadConns: 64, loadDur: time.Second, bigDur: 700 * time.Millisecond,
	idlePairs: 1000, idleRounds: 1,
	setupDur: 700 * time.Millisecond, setupDialers: 8,
	fanDur: 700 * time.Millisecond, fanClients: 1000,
	holdPairs: 2000, holdDur: 4 * time.Second,
	bigPairs: 5000,
}

// runner runs the phases and collects Results.
type runner struct {
	e   *env
	p   params
	res *Results
	log func(format string, args ...any)
}

var benchHTTP = &http.Client{Transport: &http.Transport{
	Proxy:       nil, // loopback only, whatever the environment says
	DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
}}

func dialWS(ctx context.Context, url string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: benchHTTP, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(8 << 20)
	return c, nil
}

// rtt sends msg and waits for its echo.
func rtt(ctx context.Context, c *websocket.Conn, msg []byte) (time.Duration, error) {
	start := time.Now()
	if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
		return 0, err
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return 0, err
	}
	if len(got) != len(msg) {
		return 0, fmt.Errorf("echo of %d bytes came back as %d", len(msg), len(got))
	}
	return time.Since(start), nil
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// rotate returns targets starting at round mod len, so no target is always
// first after a pause.
func rotate[T any](ts []T, round int) []T {
	out := make([]T, 0, len(ts))
	for i := range ts {
		out = append(out, ts[(i+round)%len(ts)])
	}
	return out
}

// latency measures 1-connection ping-pong round trips, interleaving targets
// in blocks of latBlock round trips.
func (r *runner) latency(targets []*target) error {
	ctx := context.Background()
	tok := r.e.tokens["HS256"]
	r.res.CDF = map[string][]float64{}
	for _, size := range []int{64, 4 << 10} {
		sec := fmt.Sprintf("latency %s, 1 conn", sizeName(size))
		p50 := newMetric(sec, "p50 RTT", "µs", true)
		p99 := newMetric(sec, "p99 RTT", "µs", true)
		msg := make([]byte, size)
		conns := map[string]*websocket.Conn{}
		for _, t := range targets {
			c, err := dialWS(ctx, t.url(tok))
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			defer c.CloseNow()
			conns[t.name] = c
			for range 200 {
				if _, err := rtt(ctx, c, msg); err != nil {
					return fmt.Errorf("%s warm-up: %w", t.name, err)
				}
			}
		}
		for round := range r.p.rounds {
			samples := map[string][]float64{}
			for done := 0; done < r.p.latSamples; done += r.p.latBlock {
				for _, t := range rotate(targets, round) {
					for range r.p.latBlock {
						d, err := rtt(ctx, conns[t.name], msg)
						if err != nil {
							return fmt.Errorf("%s: %w", t.name, err)
						}
						samples[t.name] = append(samples[t.name], micros(d))
					}
				}
			}
			for _, t := range targets {
				s := sortedCopy(samples[t.name])
				p50.add(t.name, pct(s, 50))
				p99.add(t.name, pct(s, 99))
				if size == 64 {
					r.res.CDF[t.name] = append(r.res.CDF[t.name], samples[t.name]...)
				}
			}
			r.log("  %s round %d: %s", sec, round+1, summary(p50, p99, round))
		}
		for _, c := range conns {
			c.Close(websocket.StatusNormalClosure, "")
		}
		r.add(p50, p99)
	}
	return nil
}

func summary(p50, p99 *Metric, round int) string {
	s := ""
	for _, t := range p50.Targets {
		s += fmt.Sprintf("%s %.0f/%.0fµs  ", t, p50.Rounds[t][round], p99.Rounds[t][round])
	}
	return s
}

func (r *runner) add(ms ...*Metric) {
	for _, m := range ms {
		m.finish()
		r.res.Metrics = append(r.res.Metrics, m)
	}
}

// loadResult is one closed-loop window on one target.
type loadResult struct {
	roundTrips int64
	elapsed    time.Duration
	cpu        float64 // proxy CPU seconds
	lat        []float64
	errs       int64
	syscalls   float64 // by the proxy in the window, or -1 without perf
}

// countSyscalls counts the system calls pids make over the next d with
// `perf stat`, when perf is installed and allowed; -1 otherwise.
func countSyscalls(pids []int, d time.Duration) <-chan float64 {
	out := make(chan float64, 1)
	perf, err := exec.LookPath("perf")
	if err != nil {
		out <- -1
		return out
	}
	ids := make([]string, len(pids))
	for i, p := range pids {
		ids[i] = strconv.Itoa(p)
	}
	go func() {
		b, err := exec.Command(perf, "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strings.Join(ids, ","),
			"--", "sleep", fmt.Sprintf("%.3f", d.Seconds())).CombinedOutput()
		n := -1.0
		if err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Split(line, ","); len(f) > 2 && strings.Contains(line, "raw_syscalls") {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						n = v
					}
				}
			}
		}
		out <- n
	}()
	return out
}

// closedLoop runs one goroutine per conn, each sending msg and waiting for
// its echo, for warm then dur; counts and CPU cover dur only.
func closedLoop(t *target, conns []*websocket.Conn, msg []byte, warm, dur time.Duration) loadResult {
	var phase atomic.Int32 // 0 warm-up, 1 measuring, 2 stop
	var count, errs atomic.Int64
	lats := make([][]float64, len(conns))
	var wg sync.WaitGroup
	ctx := context.Background()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ph := phase.Load()
				if ph == 2 {
					return
				}
				d, err := rtt(ctx, c, msg)
				if err != nil {
					errs.Add(1)
					return
				}
				if ph == 1 && phase.Load() == 1 {
					count.Add(1)
					lats[i] = append(lats[i], micros(d))
				}
			}
		}()
	}
	time.Sleep(warm)
	var sys <-chan float64
	if len(t.pids()) > 0 {
		sys = countSyscalls(t.pids(), dur)
	}
	cpu0, t0 := cpuSeconds(t.pids()), time.Now()
	phase.Store(1)
	time.Sleep(dur)
	phase.Store(2)
	res := loadResult{roundTrips: count.Load(), elapsed: time.Since(t0), cpu: cpuSeconds(t.pids()) - cpu0, syscalls: -1}
	wg.Wait()
	if sys != nil {
		res.syscalls = <-sys
	}
	res.errs = errs.Load()
	for _, l := range lats {
		res.lat = append(res.lat, l...)
	}
	return res
}

func openConns(ctx context.Context, t *target, tok string, n, dialers int) ([]*websocket.Conn, error) {
	return dialAll(n, dialers, func(i int) (*websocket.Conn, error) {
		c, err := dialWS(ctx, t.url(tok))
		if err != nil {
			return nil, fmt.Errorf("%s conn %d: %w", t.name, i, err)
		}
		if _, err := rtt(ctx, c, make([]byte, 64)); err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("%s conn %d: %w", t.name, i, err)
		}
		return c, nil
	})
}

// dialAll opens n connections with `dialers` goroutines. The first error
// stops the others, closes what was opened and is returned.
func dialAll(n, dialers int, dial func(i int) (*websocket.Conn, error)) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dial(i)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

// readAll runs one reader per connection, handing each message to the
// window (unwrapped from Centrifugo's push envelopes when centrifugo is
// set), until the connections close; the returned func waits for them.
func readAll(ctx context.Context, conns []*websocket.Conn, w *fanWindow, centrifugo bool) (wait func()) {
	var wg sync.WaitGroup
	for _, c := range conns {
		recv, flush := w.receiver()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer flush()
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					return
				}
				if centrifugo {
					centrifugoData(ctx, c, b, recv)
				} else {
					recv(b)
				}
			}
		}()
	}
	return wg.Wait
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			c.CloseNow()
		}
	}
}

// load is the 64-connection closed loop with 64 B messages, and the
// 1-connection closed loop with 1 MiB messages.
func (r *runner) load(targets []*target) error {
	ctx := context.Background()
	tok := r.e.tokens["HS256"]
	for _, spec := range []struct {
		conns int
		size  int
		dur   time.Duration
	}{{r.p.loadConns, 1 << 10, r.p.loadDur}, {1, 1 << 20, r.p.bigDur}} {
		sec := fmt.Sprintf("closed loop, %d conns, %s", spec.conns, sizeName(spec.size))
		var ms []*Metric
		rate := newMetric(sec, "round trips/s", "1/s", false)
		var perCPU, p99, mibs, cpuPerMiB, sysPer *Metric
		if spec.size < 1<<20 {
			ms = append(ms, rate)
			perCPU = newMetric(sec, "proxied msgs per proxy-CPU-s", "1/s", false)
			p99 = newMetric(sec, "p99 RTT", "µs", true)
			sysPer = newMetric(sec, "proxy syscalls per proxied msg (perf)", "", true)
			ms = append(ms, perCPU, p99, sysPer)
		} else {
			mibs = newMetric(sec, "throughput each way", "MiB/s", false)
			cpuPerMiB = newMetric(sec, "proxy CPU per MiB proxied", "ms", true)
			ms = append(ms, mibs, cpuPerMiB)
		}
		proxyCPU := newMetric(sec, "proxy CPU", "% of a core", true)
		ms = append(ms, proxyCPU)
		msg := make([]byte, spec.size)
		for round := range r.p.rounds {
			line := ""
			for _, t := range rotate(targets, round) {
				// Fresh connections per window: a client that is not reading
				// cannot answer wsgate's heartbeat pings, so connections are
				// not left idle while the other targets run.
				conns, err := openConns(ctx, t, tok, spec.conns, 8)
				if err != nil {
					return err
				}
				res := closedLoop(t, conns, msg, 300*time.Millisecond, spec.dur)
				for _, c := range conns {
					c.Close(websocket.StatusNormalClosure, "")
				}
				if res.errs > 0 {
					return fmt.Errorf("%s: %d errors in the closed loop", t.name, res.errs)
				}
				rt := float64(res.roundTrips) / res.elapsed.Seconds()
				rate.add(t.name, rt)
				if t.proc != nil {
					proxyCPU.add(t.name, 100*res.cpu/res.elapsed.Seconds())
				}
				if perCPU != nil {
					p99.add(t.name, pct(sortedCopy(res.lat), 99))
					if t.proc != nil {
						perCPU.add(t.name, 2*float64(res.roundTrips)/res.cpu)
						if res.syscalls >= 0 {
							sysPer.add(t.name, res.syscalls/(2*float64(res.roundTrips)))
						}
					}
				} else {
					mibs.add(t.name, rt*float64(spec.size)/(1<<20))
					if t.proc != nil {
						cpuPerMiB.add(t.name, 1000*res.cpu/(2*float64(res.roundTrips)*float64(spec.size)/(1<<20)))
					}
				}
				line += fmt.Sprintf("%s %.0f/s cpu %.2fs  ", t.name, rt, res.cpu)
			}
			r.log("  %s round %d: %s", sec, round+1, line)
		}
		r.add(ms...)
	}
	return nil
}

// startKind starts a fresh target of kind against up.
func (r *runner) startKind(kind string, up *upstream) (*target, error) {
	switch kind {
	case "direct":
		return r.e.direct(up), nil
	case "relay":
		return r.e.startRelay("idle-relay", up)
	case "nginx":
		return r.e.startNginx("idle-nginx", up)
	case "haproxy":
		return r.e.startHAProxy("idle-haproxy", up)
	case "traefik":
		return r.e.startTraefik("idle-traefik", up)
	case "wsgate":
		return r.e.startWsgate("idle-wsgate", wsgateOpts{upstream: up})
	}
	return nil, fmt.Errorf("unknown target %q", kind)
}

// idle holds idlePairs pairs open through a fresh upstream and proxy per
// round and kind, and reports RSS and goroutines per pair.
func (r *runner) idle(kinds []string) error {
	ctx := context.Background()
	tok := r.e.tokens["HS256"]
	n := r.p.idlePairs
	sec := fmt.Sprintf("idle, %d pairs", n)
	rss := newMetric(sec, "proxy RSS per pair", "KiB", true)
	gor := newMetric(sec, "proxy goroutines per pair", "", true)
	upRSS := newMetric(sec, "echo upstream's own RSS per conn", "KiB", true)
	var heap, stack, upGor, added []float64
	for round := range r.p.idleRounds {
		for _, kind := range rotate(kinds, round) {
			up, err := r.e.startUpstream("idle-upstream")
			if err != nil {
				return err
			}
			t, err := r.startKind(kind, up)
			if err != nil {
				up.stop()
				return err
			}
			time.Sleep(500 * time.Millisecond)
			base, upBase := rssBytes(t.pids()), rssBytes(up.pids())
			g0, ug0 := t.metric("go_goroutines"), up.goroutines()
			h0, s0 := t.metric("go_memstats_heap_inuse_bytes"), t.metric("go_memstats_stack_inuse_bytes")
			conns, err := openConns(ctx, t, tok, n, 16)
			if err != nil {
				t.stop()
				up.stop()
				return err
			}
			time.Sleep(2 * time.Second) // let the handshakes' garbage be collected
			grow, upGrow := rssBytes(t.pids())-base, rssBytes(up.pids())-upBase
			if t.proc != nil {
				rss.add(kind, float64(grow)/float64(n)/1024)
			}
			upRSS.add(kind, float64(upGrow)/float64(n)/1024)
			upGor = append(upGor, (up.goroutines()-ug0)/float64(n))
			if t.admin != "" {
				gor.add(kind, (t.metric("go_goroutines")-g0)/float64(n))
				added = append(added, t.metric("go_goroutines")-g0)
				heap = append(heap, (t.metric("go_memstats_heap_inuse_bytes")-h0)/float64(n)/1024)
				stack = append(stack, (t.metric("go_memstats_stack_inuse_bytes")-s0)/float64(n)/1024)
			}
			r.log("  %s round %d: %s proxy +%.1f KiB/pair, upstream +%.1f KiB/conn", sec, round+1, kind,
				float64(grow)/float64(n)/1024, float64(upGrow)/float64(n)/1024)
			closeAll(conns)
			t.stop()
			up.stop()
		}
	}
	r.res.Extra["idle_wsgate_heap_inuse_kib_per_pair"] = median(heap)
	r.res.Extra["idle_wsgate_stack_inuse_kib_per_pair"] = median(stack)
	r.res.Extra["idle_upstream_goroutines_per_conn"] = median(upGor)
	if len(added) > 0 {
		r.res.Extra["idle_wsgate_goroutines_added"] = median(added)
	}
	r.add(rss, gor, upRSS)
	return nil
}

// setupCase is one kind of handshake to measure.
type setupCase struct {
	name string
	t    *target
	tok  string
}

// setup measures connection setup: dial, upgrade, one 64 B echo, close,
// from setupDialers goroutines at once, and the proxy CPU it costs.
func (r *runner) setup(cases []setupCase) error {
	sec := "connection setup, 8 dialers"
	rate := newMetric(sec, "connections/s", "1/s", false)
	cpu := newMetric(sec, "proxy CPU per connection", "µs", true)
	for round := range r.p.rounds {
		line := ""
		for _, c := range rotate(cases, round) {
			n, elapsed, cpuS, err := r.setupWindow(c)
			if err != nil {
				return err
			}
			rate.add(c.name, float64(n)/elapsed.Seconds())
			if c.t.proc != nil {
				cpu.add(c.name, 1e6*cpuS/float64(n))
			}
			line += fmt.Sprintf("%s %.0f/s %.0fµs  ", c.name, float64(n)/elapsed.Seconds(), 1e6*cpuS/float64(n))
		}
		r.log("  %s round %d: %s", sec, round+1, line)
	}
	r.add(rate, cpu)
	return nil
}

func (r *runner) setupWindow(c setupCase) (int64, time.Duration, float64, error) {
	ctx := context.Background()
	msg := make([]byte, 64)
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	cpu0, t0 := cpuSeconds(c.t.pids()), time.Now()
	deadline := t0.Add(r.p.setupDur)
	for range r.p.setupDialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				ws, err := dialWS(ctx, c.t.url(c.tok))
				if err == nil {
					if _, err = rtt(ctx, ws, msg); err == nil {
						err = ws.Close(websocket.StatusNormalClosure, "")
					} else {
						ws.CloseNow()
					}
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("%s: %w", c.name, err) })
					return
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	time.Sleep(50 * time.Millisecond) // let the proxy finish its side of the last closes
	cpuS := cpuSeconds(c.t.pids()) - cpu0
	if firstErr != nil && !errors.Is(firstErr, context.Canceled) {
		return 0, 0, 0, firstErr
	}
	return count.Load(), elapsed, cpuS, nil
}
