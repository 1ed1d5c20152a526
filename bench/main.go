// Command bench measures wsgate against baselines started in the same run
// on loopback: a direct connection to the echo upstream, a raw TCP relay,
// nginx (when installed) and rueidis alone (for the Redis fan-out), and
// writes docs/bench/{results.json,chart.png,README.md}.
//
//	go run . [-quick] [-out DIR] [-wsgate BIN]   # the benchmark (make bench)
//	go run . -profile DIR                        # CPU and heap profiles of wsgate's Handler
//	bench upstream|relay|gateway ...             # the processes the run starts
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "upstream":
			os.Exit(runUpstream(os.Args[2:]))
		case "relay":
			os.Exit(runRelay(os.Args[2:]))
		case "gateway":
			os.Exit(runGateway(os.Args[2:]))
		}
	}
	os.Exit(runBench(os.Args[1:]))
}

func runBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "a ~1 minute smoke run with small samples")
	out := fs.String("out", "../docs/bench", "where results.json, chart.png and README.md go")
	wsgateBin := fs.String("wsgate", "", "wsgate binary (default: go build ../cmd/wsgate)")
	repo := fs.String("repo", "..", "the wsgate tree, for building wsgate")
	noNginx := fs.Bool("no-nginx", false, "skip nginx even if installed")
	profileDir := fs.String("profile", "", "profile wsgate's Handler into DIR instead of benchmarking")
	render := fs.Bool("render", false, "only rewrite README.md and chart.png from OUT/results.json")
	phases := fs.String("phases", "latency,load,setup,idle,fanout,hold", "phases to run")
	command := fs.String("command", "", "command line to record in the README (default: this one)")
	keep := fs.Bool("keep", false, "keep the temp dir (configs, process logs) for a post-mortem")
	fs.Parse(args)
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}

	if *render {
		if err := rerender(*out); err != nil {
			logf("render: %v", err)
			return 1
		}
		return 0
	}
	limit, err := raiseNoFile()
	if err != nil {
		logf("cannot raise RLIMIT_NOFILE: %v", err)
	}
	dir, err := os.MkdirTemp("", "wsgate-bench-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer func() {
		if *keep {
			logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	self, err := os.Executable()
	if err != nil {
		logf("%v", err)
		return 1
	}
	if *wsgateBin == "" && *profileDir == "" {
		*wsgateBin = filepath.Join(dir, "wsgate")
		logf("building wsgate from %s", *repo)
		cmd := exec.Command("go", "build", "-o", *wsgateBin, "./cmd/wsgate")
		cmd.Dir, cmd.Stdout, cmd.Stderr = *repo, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			logf("build wsgate: %v", err)
			return 1
		}
	}
	nginx := ""
	if !*noNginx {
		for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
			if path, err := exec.LookPath(p); err == nil {
				nginx = path
				break
			}
		}
	}
	e, err := newEnv(dir, self, *wsgateBin, nginx)
	if err != nil {
		logf("%v", err)
		return 1
	}
	if *profileDir != "" {
		if err := profile(e, *profileDir, logf); err != nil {
			logf("profile: %v", err)
			return 1
		}
		return 0
	}

	p := fullParams
	if *quick {
		p = quickParams
	}
	if limit > 0 && uint64(2*p.holdPairs+500) > limit {
		p.holdPairs = int(limit-500) / 2
		logf("RLIMIT_NOFILE is %d: holding %d pairs", limit, p.holdPairs)
	}
	res := &Results{Date: today(), Quick: *quick, Machine: machineInfo(), Extra: map[string]float64{}}
	res.Command = *command
	if res.Command == "" {
		res.Command = "go run ./bench " + strings.Join(args, " ")
	}
	if nginx != "" {
		if out, err := exec.Command(nginx, "-v").CombinedOutput(); err == nil {
			res.Machine.Nginx = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
		}
	} else {
		res.Notes = append(res.Notes, "nginx was not on PATH: the nginx baseline and the goals measured against it are missing.")
	}
	res.Machine.Redis = redisVersion()
	idle := idlePercent(time.Second)
	res.Machine.IdleBefore = fmt.Sprintf("%.0f%%", idle)
	if idle < 85 {
		res.Notes = append(res.Notes, fmt.Sprintf("The machine was only %.0f%% idle before the run: expect noisy absolute numbers.", idle))
	}
	r := &runner{e: e, p: p, res: res, log: logf}
	start := time.Now()
	if err := r.run(strings.Split(*phases, ",")); err != nil {
		logf("bench: %v", err)
		res.Notes = append(res.Notes, "The run stopped early: "+err.Error())
	}
	res.Extra["run_seconds"] = math.Round(time.Since(start).Seconds())
	r.evaluate()

	if err := os.MkdirAll(*out, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	for _, w := range []func() error{
		func() error { return res.writeREADME(filepath.Join(*out, "README.md")) },
		func() error { return writeChart(res, filepath.Join(*out, "chart.png")) },
		func() error { return res.writeJSON(filepath.Join(*out, "results.json")) },
	} {
		if err := w(); err != nil {
			logf("write results: %v", err)
			return 1
		}
	}
	res.table(os.Stdout)
	fmt.Println()
	res.goalsTable(os.Stdout)
	logf("wrote %s/{results.json,README.md,chart.png} in %s", *out, time.Since(start).Round(time.Second))
	return 0
}

func has(phases []string, p string) bool {
	for _, x := range phases {
		if strings.TrimSpace(x) == p {
			return true
		}
	}
	return false
}

// run starts the shared stack and runs the phases in order.
func (r *runner) run(phases []string) error {
	e := r.e
	up, err := e.startUpstream("upstream")
	if err != nil {
		return err
	}
	defer up.stop()
	targets := []*target{e.direct(up)}
	relay, err := e.startRelay("relay", up)
	if err != nil {
		return err
	}
	defer relay.stop()
	targets = append(targets, relay)
	kinds := []string{"direct", "relay"}
	if e.nginx != "" {
		ng, err := e.startNginx("nginx", up)
		if err != nil {
			return err
		}
		defer ng.stop()
		targets = append(targets, ng)
		kinds = append(kinds, "nginx")
	}
	gw, err := e.startWsgate("wsgate", wsgateOpts{upstream: up})
	if err != nil {
		return err
	}
	defer gw.stop()
	targets = append(targets, gw)
	kinds = append(kinds, "wsgate")

	if has(phases, "latency") {
		r.log("latency: 1 conn, %d rounds × %d round trips per target and size", r.p.rounds, r.p.latSamples)
		r.phaseErr("latency", r.latency(targets))
	}
	if has(phases, "load") {
		r.log("closed loop: %d conns × 64 B, then 1 conn × 1 MiB", r.p.loadConns)
		r.phaseErr("closed loop", r.load(targets))
	}
	if has(phases, "setup") {
		r.verifyCosts()
		cold, err := e.startWsgate("wsgate-cold", wsgateOpts{upstream: up, cacheSize: -1})
		if err != nil {
			return err
		}
		cases := []setupCase{}
		for _, t := range targets[:len(targets)-1] {
			cases = append(cases, setupCase{t.name, t, e.tokens["HS256"]})
		}
		for _, alg := range []string{"HS256", "RS256", "ES256"} {
			cases = append(cases, setupCase{"wsgate " + alg + " cold", cold, e.tokens[alg]})
		}
		cases = append(cases, setupCase{"wsgate HS256 cached", gw, e.tokens["HS256"]})
		r.log("connection setup: %d cases × %d rounds × %s", len(cases), r.p.rounds, r.p.setupDur)
		r.phaseErr("setup", r.setup(cases))
		cold.stop()
	}
	if has(phases, "idle") {
		r.log("idle: %d pairs, %d rounds, fresh processes each", r.p.idlePairs, r.p.idleRounds)
		r.phaseErr("idle", r.idle(kinds))
	}
	if has(phases, "fanout") {
		if _, err := exec.LookPath("redis-server"); err != nil {
			r.res.Notes = append(r.res.Notes, "redis-server was not on PATH: no fan-out figures.")
		} else {
			r.phaseErr("fan-out", r.fanoutPhase())
		}
	}
	if has(phases, "hold") {
		r.log("hold: %d pairs with a message per pair per second for %s", r.p.holdPairs, r.p.holdDur)
		r.phaseErr("hold", r.hold())
	}
	return nil
}

// fanoutPhase runs the fan-out against its own redis-server and wsgate,
// stopped before the next phase.
func (r *runner) fanoutPhase() error {
	redis, addr, err := r.e.startRedis()
	if err != nil {
		return err
	}
	defer redis.stop()
	rgw, err := r.e.startWsgate("wsgate-redis", wsgateOpts{redisURL: "redis://" + addr + "/0"})
	if err != nil {
		return err
	}
	defer rgw.stop()
	r.log("fan-out through redis-server %s", addr)
	return r.fanout(rgw, addr)
}

// phaseErr records a failed phase and lets the run go on with the next.
func (r *runner) phaseErr(phase string, err error) {
	if err != nil {
		r.log("%s failed: %v", phase, err)
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("The %s phase failed: %v", phase, err))
	}
}

// verifyCosts measures, in this process, what one token check costs with
// the cache off (the signature check) and with a cache hit.
func (r *runner) verifyCosts() {
	e := r.e
	ctx := context.Background()
	mk := func(cache int) *auth.Verifier {
		v, err := auth.New(auth.Config{HMACSecret: []byte(benchSecret), PublicKeyFiles: []string{e.rsaPEM, e.ecPEM}, Leeway: 30 * time.Second, CacheSize: cache}, zap.NewNop(), nil)
		if err != nil {
			panic(err)
		}
		return v
	}
	cold, cached := mk(-1), mk(0)
	for _, alg := range []string{"HS256", "RS256", "ES256"} {
		tok := e.tokens[alg]
		req, _ := http.NewRequest(http.MethodGet, "http://gw/ws/echo?token="+tok, nil)
		each := func(v *auth.Verifier, n int) float64 {
			v.Verify(ctx, tok)
			var best float64 = math.Inf(1)
			for range 3 { // best of 3: the cost, not the machine's noise
				t0 := time.Now()
				for range n {
					raw, _, _ := v.Extract(req)
					if _, err := v.Verify(ctx, raw); err != nil {
						panic(err)
					}
				}
				best = min(best, micros(time.Since(t0))/float64(n))
			}
			return best
		}
		r.res.Extra["verify_cold_us_"+alg] = each(cold, 300)
		r.res.Extra["verify_cached_us_"+alg] = each(cached, 20000)
	}
}

// evaluate checks the issue #5 goals against the medians.
func (r *runner) evaluate() {
	res := r.res
	goal := func(name, measured string, met bool) {
		res.Goals = append(res.Goals, Goal{Goal: name, Measured: measured, Met: met})
	}
	ratio := func(sec, name, base string) (float64, bool) {
		m := res.metric(sec, name)
		if m == nil {
			return math.NaN(), false
		}
		v, ok := m.Ratios["wsgate"][base]
		return v, ok && !math.IsNaN(v)
	}
	for _, sz := range []string{"64 B", "4 KiB"} {
		sec := "latency " + sz + ", 1 conn"
		if res.metric(sec, "p50 RTT") == nil {
			continue
		}
		rr, ok1 := ratio(sec, "p50 RTT", "relay")
		rn, ok2 := ratio(sec, "p50 RTT", "nginx")
		goal("p50 RTT "+sz+" ≤ 1.1× relay and ≤ 1.0× nginx", fmt.Sprintf("%.2f× relay, %.2f× nginx", rr, rn), ok1 && ok2 && rr <= 1.1 && rn <= 1.0)
		r99, ok := ratio(sec, "p99 RTT", "nginx")
		goal("p99 RTT "+sz+" ≤ 1.0× nginx", fmt.Sprintf("%.2f× nginx", r99), ok && r99 <= 1.0)
	}
	if v, ok := ratio("closed loop, 64 conns, 64 B", "proxied msgs per proxy-CPU-s", "nginx"); res.metric("closed loop, 64 conns, 64 B", "round trips/s") != nil {
		goal("msgs per proxy-CPU-second ≥ 1.0× nginx (64 conns, 64 B)", fmt.Sprintf("%.2f× nginx", v), ok && v >= 1.0)
	}
	idle := fmt.Sprintf("idle, %d pairs", r.p.idlePairs)
	if m := res.metric(idle, "proxy RSS per pair"); m != nil {
		v := m.Median["wsgate"]
		goal("RSS per idle pair ≤ 16 KiB", fmt.Sprintf("%.1f KiB (nginx %.1f, relay %.1f)", v, m.Median["nginx"], m.Median["relay"]), v <= 16)
	}
	if m := res.metric(idle, "proxy goroutines per pair"); m != nil {
		v := m.Median["wsgate"]
		goal("≤ 2 goroutines per idle pair", fmt.Sprintf("%.2f", v), v <= 2.0)
	}
	if m := res.metric("connection setup, 8 dialers", "proxy CPU per connection"); m != nil {
		ng, okN := m.Median["nginx"]
		for _, alg := range []string{"HS256", "RS256", "ES256"} {
			v := m.Median["wsgate "+alg+" cold"]
			allow := 1.2*ng + res.Extra["verify_cold_us_"+alg]
			goal("proxy CPU per new connection ≤ 1.2× nginx + signature check ("+alg+")",
				fmt.Sprintf("%.0f µs vs allowance %.0f µs (nginx %.0f, verify %.1f)", v, allow, ng, res.Extra["verify_cold_us_"+alg]), okN && v <= allow)
		}
	}
	if v, ok := res.Extra["verify_cached_us_HS256"]; ok {
		goal("cached-token verification ≤ 2 µs per handshake", fmt.Sprintf("%.2f µs (extract + verify, HS256 token; RS256 %.2f, ES256 %.2f)", v, res.Extra["verify_cached_us_RS256"], res.Extra["verify_cached_us_ES256"]), v <= 2)
	}
	one := fmt.Sprintf("fan-out 1→1, %d B", fanPayload)
	if v, ok := ratio(one, "deliveries/s", "rueidis"); ok {
		goal("fan-out 1→1 ≥ 0.8× rueidis alone", fmt.Sprintf("%.2f× rueidis", v), v >= 0.8)
	}
	many := fmt.Sprintf("fan-out 1→%d, %d B", r.p.fanClients, fanPayload)
	if m := res.metric(many, "deliveries/s"); m != nil {
		rate := m.Median["wsgate"]
		p99 := res.metric(many, "p99 publish→receive").Median["wsgate"]
		goal(fmt.Sprintf("fan-out 1→%d ≥ 150k deliveries/s with p99 ≤ 50 ms", r.p.fanClients), fmt.Sprintf("%.0f/s, p99 %.1f ms", rate, p99), rate >= 150000 && p99 <= 50)
	}
	if n, ok := res.Extra["hold_pairs_target"]; ok {
		held := res.Extra["hold_pairs_active_end"]
		errs := res.Extra["hold_errors"]
		goal(fmt.Sprintf("%.0f concurrent pairs held with steady traffic, no errors", n),
			fmt.Sprintf("%.0f active at the end, %.0f errors in %.0f messages", held, errs, res.Extra["hold_messages"]), held == n && errs == 0)
	}
}
