package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// baselines are the targets every other target is compared with, in the
// order the table shows them.
var baselines = []string{"direct", "relay", "nginx", "haproxy", "traefik", "rueidis", "centrifugo"}

func isBaseline(t string) bool { return slices.Contains(baselines, t) }

// Metric is one measured quantity for several targets, one value per round.
type Metric struct {
	Section string `json:"section"`
	Name    string `json:"name"`
	Unit    string `json:"unit"`
	// Lower says whether lower values are better.
	Lower bool `json:"lower_is_better"`
	// Targets in the order measured.
	Targets []string             `json:"targets"`
	Rounds  map[string][]float64 `json:"rounds"`
	Median  map[string]float64   `json:"median"`
	// Ratios maps a non-baseline target to the median over rounds of
	// target/baseline, per baseline measured in the same rounds.
	Ratios map[string]map[string]float64 `json:"ratios,omitempty"`
}

func newMetric(section, name, unit string, lower bool) *Metric {
	return &Metric{Section: section, Name: name, Unit: unit, Lower: lower, Rounds: map[string][]float64{}}
}

func (m *Metric) add(target string, v float64) {
	if _, ok := m.Rounds[target]; !ok {
		m.Targets = append(m.Targets, target)
	}
	m.Rounds[target] = append(m.Rounds[target], v)
}

// finish computes medians and per-round ratios.
func (m *Metric) finish() {
	m.Median = map[string]float64{}
	m.Ratios = map[string]map[string]float64{}
	for t, v := range m.Rounds {
		m.Median[t] = median(v)
	}
	for _, t := range m.Targets {
		if isBaseline(t) {
			continue
		}
		for _, b := range baselines {
			bv, ok := m.Rounds[b]
			if !ok {
				continue
			}
			tv := m.Rounds[t]
			var r []float64
			for i := 0; i < len(tv) && i < len(bv); i++ {
				r = append(r, tv[i]/bv[i])
			}
			if m.Ratios[t] == nil {
				m.Ratios[t] = map[string]float64{}
			}
			m.Ratios[t][b] = median(r)
		}
	}
}

// Goal is one target from issue #5 and whether the run met it.
type Goal struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
	// By says by how much the target was met or missed.
	By string `json:"by,omitempty"`
}

// Machine says where the numbers come from.
type Machine struct {
	CPUs       int    `json:"cpus"`
	Model      string `json:"model"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	Nginx      string `json:"nginx,omitempty"`
	Redis      string `json:"redis,omitempty"`
	HAProxy    string `json:"haproxy,omitempty"`
	Traefik    string `json:"traefik,omitempty"`
	Centrifugo string `json:"centrifugo,omitempty"`
	NoFile     uint64 `json:"rlimit_nofile,omitempty"`
	IdleBefore string `json:"idle_cpu_before"`
}

// Results is docs/bench/results.json.
type Results struct {
	Date    string    `json:"date"`
	Command string    `json:"command"`
	Quick   bool      `json:"quick"`
	Machine Machine   `json:"machine"`
	Metrics []*Metric `json:"metrics"`
	Goals   []Goal    `json:"goals"`
	Notes   []string  `json:"notes,omitempty"`
	// CDF holds the 64 B round-trip distribution per target for the chart:
	// every sample while running, 1,001 quantiles (0, 0.1, …, 100 %) in the file.
	CDF map[string][]float64 `json:"latency_quantiles_64b_us,omitempty"`
	// Extra holds single figures that are not per-target (verify costs, hold results).
	Extra map[string]float64 `json:"extra"`
}

func (r *Results) metric(section, name string) *Metric {
	for _, m := range r.Metrics {
		if m.Section == section && m.Name == name {
			return m
		}
	}
	return nil
}

func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if out, err := exec.Command("lscpu").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Model name:"); ok {
				m.Model = strings.TrimSpace(v)
			}
		}
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}

func fmtVal(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "–"
	case a >= 100000:
		return fmt.Sprintf("%.0fk", v/1000)
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// table renders the medians as Markdown, one table per section: the
// baselines measured in that section as columns, one row per metric and
// non-baseline target, with the target's value and its ratio (median of
// per-round ratios) against each of those baselines.
func (r *Results) table(w io.Writer) {
	var sections []string
	bySection := map[string][]*Metric{}
	for _, m := range r.Metrics {
		if _, ok := bySection[m.Section]; !ok {
			sections = append(sections, m.Section)
		}
		bySection[m.Section] = append(bySection[m.Section], m)
	}
	for _, sec := range sections {
		ms := bySection[sec]
		var bs []string
		for _, b := range baselines {
			for _, m := range ms {
				if _, ok := m.Rounds[b]; ok {
					bs = append(bs, b)
					break
				}
			}
		}
		fmt.Fprintf(w, "\n### %s\n\n| metric | unit |", sec)
		for _, b := range bs {
			fmt.Fprintf(w, " %s |", b)
		}
		fmt.Fprint(w, " value |")
		for _, b := range bs {
			fmt.Fprintf(w, " ×%s |", b)
		}
		fmt.Fprint(w, "\n|---|---|")
		fmt.Fprint(w, strings.Repeat("--:|", 2*len(bs)+1))
		fmt.Fprintln(w)
		for _, m := range ms {
			cell := func(t string) string {
				v, ok := m.Median[t]
				if !ok {
					return ""
				}
				return fmtVal(v)
			}
			row := func(label, value string, ratios map[string]float64) {
				fmt.Fprintf(w, "| %s | %s |", label, m.Unit)
				for _, b := range bs {
					fmt.Fprintf(w, " %s |", cell(b))
				}
				fmt.Fprintf(w, " %s |", value)
				for _, b := range bs {
					if v, ok := ratios[b]; ok && !math.IsNaN(v) {
						fmt.Fprintf(w, " %.2f |", v)
					} else {
						fmt.Fprint(w, "  |")
					}
				}
				fmt.Fprintln(w)
			}
			rows := 0
			for _, t := range m.Targets {
				if isBaseline(t) {
					continue
				}
				rows++
				row(m.Name+" ("+t+")", cell(t), m.Ratios[t])
			}
			if rows == 0 { // baselines only (e.g. the upstream's own share)
				row(m.Name, "", nil)
			}
		}
	}
}

func (r *Results) goalsTable(w io.Writer) {
	fmt.Fprintln(w, "| target | measured (medians of per-round ratios) | met | by |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, g := range r.Goals {
		met := "**no**"
		if g.Met {
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", g.Goal, g.Measured, met, g.By)
	}
}

// costTable puts the measured per-pair figures on paper for 1,000,000
// proxied connections: process RSS (kernel socket memory comes on top, the
// same for every proxy), pods at the pair count one wsgate process was
// measured holding, and the CPU a full reconnect of every client costs.
func (r *Results) costTable(w io.Writer) {
	const million = 1e6
	var idle, setup *Metric
	for _, m := range r.Metrics {
		if m.Name == "proxy RSS per pair" {
			idle = m
		}
		if m.Name == "proxy CPU per connection" {
			setup = m
		}
	}
	if idle == nil {
		fmt.Fprintln(w, "No idle-memory figures in this run.")
		return
	}
	const perPod = 50000.0
	fmt.Fprintf(w, "Pods are sized at %.0f pairs each (issue #14's per-process target; this run's big idle phase held %.0f in one\n", perPod, r.Extra["big_pairs_opened"])
	fmt.Fprintln(w, "wsgate process), and the same count is assumed for the peers. Memory is the process RSS growth per idle pair (idle-phase")
	fmt.Fprintln(w, "median) times the pairs; each process's own idle footprint (a few MiB) and the kernel's socket memory (two sockets per")
	fmt.Fprintln(w, "pair, the same for every proxy) come on top.")
	fmt.Fprintln(w, "Reconnect storm: every client reconnecting once, at the measured proxy CPU per new connection (HS256 token, cache cold for wsgate).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| proxy | KiB per idle pair | GiB RSS for 1M pairs | pods | GiB per pod | goroutines at 1M | core-seconds to reconnect 1M |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|")
	pods := math.Ceil(million / perPod)
	for _, t := range idle.Targets {
		if t == "direct" {
			continue
		}
		kib := idle.Median[t]
		gib := kib * million / (1 << 20)
		gor := "–"
		if t == "wsgate" {
			for _, m := range r.Metrics {
				if m.Name == "proxy goroutines per pair" {
					gor = fmt.Sprintf("%.0f", m.Median["wsgate"]*million)
				}
			}
		}
		storm := "–"
		if setup != nil {
			key := t
			if t == "wsgate" {
				key = "wsgate HS256 cold"
			}
			if us, ok := setup.Median[key]; ok {
				storm = fmt.Sprintf("%.0f", us*million/1e6)
			}
		}
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.0f | %.2f | %s | %s |\n", t, kib, gib, pods, gib/pods, gor, storm)
	}
	if v, ok := r.Extra["big_wsgate_rss_kib_per_pair"]; ok && v > 0 {
		fmt.Fprintf(w, "\nAt the big idle phase's own figure (%.1f KiB per pair with %.0f pairs held by one process), 1M pairs are %.1f GiB of wsgate RSS.\n",
			v, r.Extra["big_pairs_opened"], v*million/(1<<20))
	}
}

// writeJSON writes r with every NaN (not measured) as -1, which JSON can
// carry; call it last, as it rewrites r.
func (r *Results) writeJSON(path string) error {
	fix := func(v *float64) {
		if math.IsNaN(*v) || math.IsInf(*v, 0) {
			*v = -1
		}
	}
	for _, m := range r.Metrics {
		for _, rs := range m.Rounds {
			for i := range rs {
				fix(&rs[i])
			}
		}
		for k, v := range m.Median {
			fix(&v)
			m.Median[k] = v
		}
		for _, rs := range m.Ratios {
			for k, v := range rs {
				fix(&v)
				rs[k] = v
			}
		}
	}
	for k, v := range r.Extra {
		fix(&v)
		r.Extra[k] = v
	}
	// The chart only needs the distribution: keep 1,001 quantiles per target.
	for t, samples := range r.CDF {
		if len(samples) > 1001 {
			sorted := sortedCopy(samples)
			q := make([]float64, 1001)
			for i := range q {
				q[i] = math.Round(100*pct(sorted, math.Max(float64(i)/10, 0.001))) / 100
			}
			r.CDF[t] = q
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (r *Results) writeREADME(path string) error {
	var b strings.Builder
	fmt.Fprintf(&b, `# wsgate benchmark

Generated by `+"`%s`"+` on %s. Do not edit by hand: `+"`make bench`"+` rewrites this file,
`+"`results.json`"+` (every round of every figure) and `+"`chart.png`"+`.

## Machine

- CPUs: %d (`+"`nproc`"+`), model: %s
- Kernel: %s; Go: %s; nginx: %s; HAProxy: %s; Traefik: %s; Centrifugo: %s; redis-server: %s; fd limit: %d
- Idle CPU just before the run: %s. Client, proxies, upstream and Redis all share these cores, so
  absolute numbers move with the machine's load; the ratios are taken round by round inside one run.

## How it is measured

Targets run side by side on loopback: **direct** (client ↔ echo upstream), **relay** (raw TCP relay
copying both ways through a pooled buffer taken only while bytes are in flight: the floor for any user-space hop), **nginx** (2 workers, the same two injected headers,
when installed), **haproxy** (Debian's HAProxy, 2 threads, `+"`mode http`"+`, the same two injected headers), **traefik**
(pinned, built by `+"`scripts/build-traefik.sh`"+`, one router, no middleware), **wsgate** (the binary built from this tree,
JWT verification on, `+"`log_level: warn`"+`, limits on but set far above the load, heartbeat 30s). The load generator is
one Go program (coder/websocket) for every target.
The echo upstream is a separate process (`+"`bench upstream`"+`). Each figure is sampled in rounds that
interleave the targets (A B C D, B C D A, …); the table shows the median over rounds, and each ratio is
the median of the per-round ratios wsgate/baseline. Proxy CPU is utime+stime from `+"`/proc/PID/stat`"+`
(nginx: master + workers). Idle memory is the VmRSS growth over the process's own idle baseline, with a fresh
upstream and proxy per round. Syscalls per message come from `+"`perf stat -e raw_syscalls:sys_enter -p PID`"+`
when perf is installed. The fan-out rows use a real `+"`redis-server`"+` and a publisher that keeps a fixed
window of messages in flight; **rueidis** is a rueidis subscriber in the bench process with no WebSocket hop.
**centrifugo** is Centrifugo (pinned, built by `+"`scripts/build-centrifugo.sh`"+`) with its Redis engine on the same
redis-server; the same client program subscribes to it over its JSON protocol on `+"`/connection/websocket`"+`
(`+"`connect`"+` with the same HS256 token, then `+"`subscribe`"+`, answering its pings) and to wsgate's channel route.
wsgate is fed by Redis `+"`PUBLISH`"+` (its production path) and, for the like-for-like row, by its `+"`POST /publish`"+`;
Centrifugo by its HTTP API `+"`/api/publish`"+`. Latency is from the publisher's timestamp inside the message to
its arrival at each subscriber.
The big idle phase holds the target count of idle pairs in one fresh wsgate process (fd limit raised; clients
from several 127.0.0.x source addresses and pairs spread over several upstream processes, since one address
pair has ~28k ephemeral ports; clients are raw upgraded sockets, so wsgate's heartbeat is 10 minutes there).

## Results

`, r.Command, r.Date, r.Machine.CPUs, r.Machine.Model, r.Machine.Kernel, r.Machine.Go, or(r.Machine.Nginx, "absent"), or(r.Machine.HAProxy, "absent"), or(r.Machine.Traefik, "absent"), or(r.Machine.Centrifugo, "absent"), or(r.Machine.Redis, "absent"), r.Machine.NoFile, r.Machine.IdleBefore)
	r.table(&b)
	fmt.Fprint(&b, "\n## Targets (issue #14)\n\n")
	r.goalsTable(&b)
	fmt.Fprint(&b, "\n## 1M connections, on paper\n\n")
	r.costTable(&b)
	if len(r.Extra) > 0 {
		fmt.Fprint(&b, "\n## Other figures\n\n")
		keys := make([]string, 0, len(r.Extra))
		for k := range r.Extra {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- `%s`: %s\n", k, fmtVal(r.Extra[k]))
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprint(&b, "\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Fprint(&b, `
## Profiles

`+"`./scripts/bench.sh -profile /tmp/wsgate-prof`"+` runs wsgate's Handler (wired as `+"`wsgate serve`"+` wires
it, plus net/http/pprof) under the 64-connection closed loop (64 B and 4 KiB), under connection setup, under
1→1,000 fan-out through redis-server, and with 5,000 idle pairs, and leaves CPU, heap (live, after GC) and
goroutine profiles with `+"`go tool pprof -top`"+` summaries in that directory.
Micro-benchmarks: `+"`go test -run '^$' -bench . -benchmem -count=5 ./auth/ ./proxy/ ./bridge/`"+`.
`)
	fmt.Fprint(&b, "\n![latency distribution and memory per idle pair](chart.png)\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func today() string { return time.Now().UTC().Format("2006-01-02 15:04 MST") }

// rerender rewrites dir's README.md and chart.png from its results.json,
// reading -1 back as not measured.
func rerender(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	unfix := func(v float64) float64 {
		if v == -1 {
			return math.NaN()
		}
		return v
	}
	for _, m := range r.Metrics {
		for _, rs := range m.Rounds {
			for i := range rs {
				rs[i] = unfix(rs[i])
			}
		}
		for k, v := range m.Median {
			m.Median[k] = unfix(v)
		}
		for _, rs := range m.Ratios {
			for k, v := range rs {
				rs[k] = unfix(v)
			}
		}
	}
	// The targets are judged again, so a change to how they are judged
	// or worded shows without a new run.
	p := fullParams
	if r.Quick {
		p = quickParams
	}
	if n, ok := r.Extra["big_pairs_target"]; ok {
		p.bigPairs = int(n)
	}
	r.Goals = nil
	(&runner{p: p, res: &r}).evaluate()
	if err := r.writeREADME(filepath.Join(dir, "README.md")); err != nil {
		return err
	}
	if err := writeChart(&r, filepath.Join(dir, "chart.png")); err != nil {
		return err
	}
	return r.writeJSON(filepath.Join(dir, "results.json"))
}
