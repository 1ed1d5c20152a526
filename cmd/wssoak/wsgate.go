package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// wsgateProcess is a `wsgate serve` child process on loopback ports.
type wsgateProcess struct {
	// Static after startWsgate.
	bin           string
	dir           string // temp dir: config, and the binary when built here
	listen, admin string
	secret        []byte
	cmd           *exec.Cmd
	metrics       *http.Client

	killOnce sync.Once

	exited  chan struct{} // closed when the process has been waited for
	exitErr error         // set before exited is closed
	logDone chan struct{} // closed when the log reader has seen EOF
	log     logStats      // owned by the log reader until logDone
}

// logStats summarises wsgate's stderr (JSON log lines, and anything else
// the runtime prints there: race reports, panics).
type logStats struct {
	Lines, Warns, Errors, Races, Panics int
	FirstError                          string
	tail                                []string
}

const shutdownGrace = 5 * time.Second

func startWsgate(ctx context.Context, o options, upstream string) (*wsgateProcess, error) {
	dir, err := os.MkdirTemp("", "wssoak-")
	if err != nil {
		return nil, err
	}
	g := &wsgateProcess{
		dir:     dir,
		bin:     o.Wsgate,
		metrics: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}},
		exited:  make(chan struct{}),
		logDone: make(chan struct{}),
	}
	fail := func(err error) (*wsgateProcess, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if g.bin == "" {
		if g.bin, err = buildWsgate(ctx, dir, o.Race); err != nil {
			return fail(err)
		}
	}
	if g.listen, err = freeAddr(); err != nil {
		return fail(err)
	}
	if g.admin, err = freeAddr(); err != nil {
		return fail(err)
	}
	var sb [32]byte
	rand.Read(sb[:])
	g.secret = []byte(hex.EncodeToString(sb[:]))
	cfg := fmt.Sprintf(`listen: %q
admin_listen: %q
shutdown_grace: %s
log_level: info
heartbeat: {interval: 10s, timeout: 5s}
auth:
  hmac_secret: %q
  leeway: 0s
limits:
  handshakes_per_second_per_ip: -1 # every soak client is 127.0.0.1
routes:
  - path: /ws/echo
    upstream: "ws://%s/echo"
`, g.listen, g.admin, shutdownGrace, g.secret, upstream)
	cfgPath := filepath.Join(dir, "wsgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}

	g.cmd = exec.Command(g.bin, "serve", "--config", cfgPath)
	g.cmd.Env = cleanEnv()
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		return fail(err)
	}
	if err := g.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start wsgate: %w", err))
	}
	go g.readLog(stderr)
	go func() {
		<-g.logDone // Wait closes the pipe: read it all first
		g.exitErr = g.cmd.Wait()
		close(g.exited)
	}()
	if err := g.waitReady(ctx); err != nil {
		g.kill()
		return nil, err
	}
	return g, nil
}

// buildWsgate builds ./cmd/wsgate of the module wssoak belongs to.
func buildWsgate(ctx context.Context, dir string, race bool) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("cannot find the wsgate module: run wssoak inside the repository, or pass -wsgate")
	}
	bin := filepath.Join(dir, "wsgate")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/wsgate")...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/wsgate: %v\n%s", err, out)
	}
	return bin, nil
}

// cleanEnv is this process's environment without WSGATE_* variables, which
// would override the soak's config file.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WSGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (g *wsgateProcess) readLog(r io.Reader) {
	defer close(g.logDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		st := &g.log
		st.Lines++
		if len(st.tail) == 20 {
			st.tail = st.tail[1:]
		}
		st.tail = append(st.tail, line)
		switch {
		case strings.Contains(line, "WARNING: DATA RACE"):
			st.Races++
		case strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:"):
			st.Panics++
		}
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		switch entry.Level {
		case "warn":
			st.Warns++
		case "error", "dpanic", "panic", "fatal":
			st.Errors++
			if st.FirstError == "" {
				st.FirstError = line
			}
		}
	}
	io.Copy(io.Discard, r)
}

func (g *wsgateProcess) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-g.exited:
			return fmt.Errorf("wsgate exited at start (%v):\n%s", g.exitErr, strings.Join(g.log.tail, "\n"))
		default:
		}
		resp, err := g.metrics.Get("http://" + g.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("wsgate not ready on %s after 15s: %v", g.admin, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sample is one measurement of the wsgate process.
type sample struct {
	Goroutines int
	RSS        int64 // bytes, VmRSS
	Active     int   // wsgate_connections_active, all routes
	// LiveHeap is the heap the last GC found live, from the Go collector's
	// next-GC target (live × (1 + GOGC/100), at least 4 MiB).
	LiveHeap int64
	// GCs counts completed GC cycles.
	GCs int64
}

func (s sample) String() string {
	return fmt.Sprintf("goroutines %d, RSS %s, live heap %s, active %d", s.Goroutines, mib(s.RSS), mib(s.LiveHeap), s.Active)
}

// sample scrapes the Go collector's metrics and wsgate_connections_active
// from the admin listener, and reads VmRSS from /proc.
func (g *wsgateProcess) sample(ctx context.Context) (sample, error) {
	var s sample
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.admin+"/metrics", nil)
	resp, err := g.metrics.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	var nextGC, gogc float64 = -1, 100
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := metricLine(sc.Text())
		if !ok {
			continue
		}
		switch {
		case name == "go_goroutines":
			s.Goroutines, found = int(value), true
		case name == "go_memstats_next_gc_bytes":
			nextGC = value
		case name == "go_gc_gogc_percent":
			gogc = value
		case name == "go_gc_duration_seconds_count":
			s.GCs = int64(value)
		case strings.HasPrefix(name, "wsgate_connections_active{") || name == "wsgate_connections_active":
			s.Active += int(value)
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !found || nextGC < 0 || gogc <= 0 {
		return s, errors.New("/metrics lacks go_goroutines, go_memstats_next_gc_bytes or go_gc_gogc_percent")
	}
	s.LiveHeap = int64(nextGC / (1 + gogc/100))
	if s.RSS, err = rss(g.cmd.Process.Pid); err != nil {
		return s, err
	}
	return s, nil
}

// idleWork scrapes /metrics every 20ms for d. An idle Go process runs no
// GC until its 2-minute forced cycle and keeps freed memory until then; a
// little steady work, like the scrapes of a real deployment, lets the
// runtime collect and return memory, so what remains is what is live.
func (g *wsgateProcess) idleWork(ctx context.Context, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.admin+"/metrics", nil)
		if resp, err := g.metrics.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricLine splits a Prometheus text-format sample into name (with
// labels) and value.
func metricLine(line string) (string, float64, bool) {
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(line[i+1:], 64)
	return line[:i], v, err == nil
}

func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// stop sends SIGTERM and waits for a clean exit within the shutdown grace.
func (g *wsgateProcess) stop() (logStats, error) {
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(shutdownGrace + 10*time.Second):
		g.cmd.Process.Kill()
		<-g.exited
		return g.log, fmt.Errorf("wsgate did not exit within %s of SIGTERM", shutdownGrace+10*time.Second)
	}
	return g.log, g.exitErr
}

// kill ends the process if it is still running and removes the temp dir.
// Safe to call after stop.
func (g *wsgateProcess) kill() {
	g.killOnce.Do(func() {
		select {
		case <-g.exited:
		default:
			g.cmd.Process.Kill()
			<-g.exited
		}
		os.RemoveAll(g.dir)
	})
}
