//go:build observability

package obscheck

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
)

// TestDashboardAgainstRealPrometheus runs wsgate (with Redis, a JWKS endpoint and an echo
// upstream) under a small load of real WebSocket clients, has a real Prometheus scrape it every
// second with the chart's alert rules loaded, and then runs every query of the chart's
// dashboard through Prometheus' HTTP API: each must return at least one real number. The
// rules must load and evaluate without error on the live data.
//
// With WSGATE_DASHBOARD_OUT set, the range of every query over the load is also written there
// as JSON (scripts/dashboard-png.sh draws docs/dashboard.png from it); OBSCHECK_LOAD sets the
// load's length (default 12s).
func TestDashboardAgainstRealPrometheus(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Fatal("prometheus not on PATH: scripts/test-observability.sh installs it")
	}
	load := 12 * time.Second
	if v := os.Getenv("OBSCHECK_LOAD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("OBSCHECK_LOAD: %v", err)
		}
		load = d
	}
	root, _ := filepath.Abs("../..")

	redis := wstest.StartRedis(t)
	up := wstest.NewUpstream(t)
	jwks := httptest.NewServer(http.HandlerFunc(serveJWKS(t)))
	t.Cleanup(jwks.Close)

	listen, admin, down := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`
listen: %q
admin_listen: %q
shutdown_grace: 2s
subscriber_queue: 4
auth:
  hmac_secret: %q
  jwks_url: %q
  jwks_refresh: 1s
redis:
  url: %q
limits:
  max_connections: 200
  max_connections_per_user: 50
  max_connections_per_tenant: 150
  handshakes_per_second_per_ip: -1
  handshakes_per_second_per_user: -1
routes:
  - path: /ws/echo
    upstream: %q
  - path: /ws/down
    upstream: "ws://%s/gone"
  - path: /ws/feed/{room}
    subscribe: ["feed:{room}"]
    history: {size: 100, ttl: 10m}
  - path: /ws/live/{room}
    subscribe: ["live:{room}"]
  - path: /ws/chat/{room}
    subscribe: ["chat:{room}"]
    publish: "chat:{room}"
`, listen, admin, wstest.Secret, jwks.URL+"/jwks.json", redis.URL(), up.WSURL()+"/echo", down)
	cfgPath := filepath.Join(t.TempDir(), "wsgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	gate := startProcess(t, "wsgate", wsgateBin, "serve", "--config", cfgPath)
	waitHTTP(t, "wsgate ready", "http://"+admin+"/readyz", gate)

	prom := startPrometheus(t, admin, filepath.Join(root, "charts", "wsgate", "files", "prometheus-rules.yaml"))

	begin := time.Now()
	runLoad(t, listen, admin, load)
	// Three more scrapes after the load, so the last rates include all of it.
	time.Sleep(3500 * time.Millisecond)
	end := time.Now()

	dash := readDashboard(t, filepath.Join(root, "charts", "wsgate", "files", "dashboard.json"))
	var out []panelData
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		pd := panelData{Title: p.Title, Unit: p.FieldConfig.Defaults.Unit, GridPos: p.GridPos}
		for _, tg := range p.Targets {
			queries++
			expr := grafanaVars(tg.Expr)
			res, err := prom.query(expr)
			if err != nil {
				t.Errorf("panel %q %s: %s: %v", p.Title, tg.RefID, expr, err)
				continue
			}
			if !hasNumber(res) {
				t.Errorf("panel %q %s: %s returned no number: %s", p.Title, tg.RefID, expr, res)
			}
			if os.Getenv("WSGATE_DASHBOARD_OUT") != "" {
				series, err := prom.queryRange(expr, begin.Add(-5*time.Second), end, time.Second)
				if err != nil {
					t.Errorf("range %s: %v", expr, err)
				}
				pd.Targets = append(pd.Targets, targetData{Legend: tg.LegendFormat, Expr: expr, Series: finite(series)})
			}
		}
		out = append(out, pd)
	}
	if queries < 20 {
		t.Fatalf("only %d dashboard queries found", queries)
	}
	t.Logf("%d dashboard queries returned data", queries)

	// The alert rules loaded into this Prometheus and evaluate cleanly on real series.
	rules := prom.rules(t)
	if len(rules) != 8 {
		t.Errorf("%d alert rules loaded, want 8", len(rules))
	}
	for name, health := range rules {
		if health.Health != "ok" {
			t.Errorf("rule %s: health %q: %s", name, health.Health, health.LastError)
		}
	}

	if path := os.Getenv("WSGATE_DASHBOARD_OUT"); path != "" {
		b, err := json.MarshalIndent(map[string]any{"title": dash.Title, "panels": out, "load_seconds": load.Seconds()}, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gate.stop(t)
}

// runLoad drives every path the dashboard shows, for d: short echo sessions with messages of
// several sizes, long-lived ones, refused handshakes (401, 502), channel subscribers fed by
// POST /publish, a publishing chat client, resumes, and one slow consumer.
func runLoad(t *testing.T, listen, admin string, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	base := "ws://" + listen
	tok := func(user string) string { return wstest.Token(t, user, nil) }
	dialResp := func(path, user string) (*websocket.Conn, *http.Response, error) {
		return websocket.Dial(ctx, base+path, &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + tok(user)}},
		})
	}
	dial := func(path, user string) (*websocket.Conn, error) {
		c, _, err := dialResp(path, user)
		return c, err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 32)
	stop := time.Now().Add(d)
	loop := func(name string, every time.Duration, f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if err := f(i); err != nil {
					errc <- fmt.Errorf("%s: %w", name, err)
					return
				}
				time.Sleep(every)
			}
		}()
	}

	// Long-lived connections, open through the whole load.
	var long []*websocket.Conn
	for i := range 3 {
		c, err := dial("/ws/echo", fmt.Sprintf("long-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		long = append(long, c)
	}
	feed, err := dial("/ws/feed/r1", "reader")
	if err != nil {
		t.Fatal(err)
	}
	chat, err := dial("/ws/chat/r1", "chatter")
	if err != nil {
		t.Fatal(err)
	}
	// Readers ended before the load did (a close from wsgate) are errors.
	readers := map[string]*websocket.Conn{"feed": feed, "chat": chat}
	for i, c := range long {
		readers[fmt.Sprintf("long-%d", i)] = c
	}
	for name, c := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := drain(ctx, c)
			if time.Now().Before(stop) {
				errc <- fmt.Errorf("%s closed before the load ended: %w", name, err)
			}
		}()
	}

	sizes := []int{12, 300, 2000, 20000, 100}
	loop("echo", 150*time.Millisecond, func(i int) error {
		c, err := dial("/ws/echo", fmt.Sprintf("user-%d", i%7))
		if err != nil {
			return err
		}
		defer c.CloseNow()
		for _, n := range sizes {
			msg := bytes.Repeat([]byte("x"), n)
			if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
				return err
			}
			if _, got, err := c.Read(ctx); err != nil || len(got) != n {
				return fmt.Errorf("echo of %d bytes: %d, %v", n, len(got), err)
			}
		}
		return c.Close(websocket.StatusNormalClosure, "")
	})
	loop("refused", 400*time.Millisecond, func(i int) error {
		if _, resp, err := websocket.Dial(ctx, base+"/ws/echo?access_token=not-a-token", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("bad token: %v %v, want 401", resp, err)
		}
		if _, resp, err := dialResp("/ws/down", "u"); err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
			return fmt.Errorf("down upstream: %v %v, want 502", resp, err)
		}
		return nil
	})
	loop("publish", 100*time.Millisecond, func(i int) error {
		if err := publish(admin, "feed:r1", fmt.Sprintf(`{"n":%d}`, i)); err != nil {
			return err
		}
		if i%5 == 0 {
			return chat.Write(ctx, websocket.MessageText, []byte(`{"say":"hi"}`))
		}
		return nil
	})
	loop("resume", time.Second, func(i int) error {
		// A position wsgate never issued: the resume is answered (bad_position) and counted.
		c, err := dial("/ws/feed/r1?since=nope-"+strconv.Itoa(i), "resumer")
		if err != nil {
			return err
		}
		defer c.CloseNow()
		if _, ctl, err := c.Read(ctx); err != nil || !bytes.Contains(ctl, []byte("wsgate.recovery")) {
			return fmt.Errorf("resume: %s %v, want the recovery control message", ctl, err)
		}
		return c.Close(websocket.StatusNormalClosure, "")
	})

	// A subscriber that never reads: its socket buffers fill, then its 4-message queue, and
	// wsgate closes it with 4008.
	slow, err := dial("/ws/live/slow", "sloth")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	big := strings.Repeat("y", 256<<10)
	for i := 0; i < 200; i++ {
		if err := publish(admin, "live:slow", big); err != nil {
			t.Fatal(err)
		}
		if metricValue(t, admin, "wsgate_bridge_slow_consumer_closes_total") > 0 {
			break
		}
	}
	if metricValue(t, admin, "wsgate_bridge_slow_consumer_closes_total") == 0 {
		t.Error("no slow-consumer close after 50 MiB to a reader that never reads")
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(time.Until(stop))
		for _, c := range long {
			c.Close(websocket.StatusNormalClosure, "")
		}
		feed.Close(websocket.StatusNormalClosure, "")
		chat.Close(websocket.StatusNormalClosure, "")
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// drain reads c until it closes.
func drain(ctx context.Context, c *websocket.Conn) error {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

func publish(admin, channel, payload string) error {
	resp, err := http.Post("http://"+admin+"/publish?channel="+url.QueryEscape(channel), "application/octet-stream", strings.NewReader(payload))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("publish to %s: %s", channel, resp.Status)
	}
	return nil
}

// metricValue sums a metric's samples as wsgate's /metrics shows them.
func metricValue(t *testing.T, admin, name string) float64 {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			sum += v
		}
	}
	return sum
}

// serveJWKS serves a JWK Set with one RSA key (the clients' tokens are HS256; the JWKS is
// there for its refresh metrics).
func serveJWKS(t *testing.T) func(http.ResponseWriter, *http.Request) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(set)
	}
}

// grafanaVars substitutes the dashboard's variables as Grafana would for "All" jobs and this
// test's 1s scrapes ($__rate_interval is at least four scrape intervals).
func grafanaVars(expr string) string {
	return strings.NewReplacer("$__rate_interval", "10s", "$job", ".*").Replace(expr)
}

// hasNumber reports whether a query result holds at least one finite sample.
func hasNumber(res []promSeries) bool {
	for _, s := range res {
		for _, v := range s.Values {
			if !math.IsNaN(v[1]) && !math.IsInf(v[1], 0) {
				return true
			}
		}
	}
	return false
}

// finite drops the samples JSON cannot carry (NaN: a quantile of no observations).
func finite(series []promSeries) []promSeries {
	for i := range series {
		vals := series[i].Values[:0]
		for _, v := range series[i].Values {
			if !math.IsNaN(v[1]) && !math.IsInf(v[1], 0) {
				vals = append(vals, v)
			}
		}
		series[i].Values = vals
	}
	return series
}

// The dashboard fields this test reads (tools/deploycheck decodes the whole model strictly).
type dashboardFile struct {
	Title  string `json:"title"`
	Panels []struct {
		Type        string `json:"type"`
		Title       string `json:"title"`
		GridPos     any    `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			RefID        string `json:"refId"`
			Expr         string `json:"expr"`
			LegendFormat string `json:"legendFormat"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T, path string) dashboardFile {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardFile
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

type panelData struct {
	Title   string       `json:"title"`
	Unit    string       `json:"unit"`
	GridPos any          `json:"gridPos"`
	Targets []targetData `json:"targets"`
}

type targetData struct {
	Legend string       `json:"legend"`
	Expr   string       `json:"expr"`
	Series []promSeries `json:"series"`
}

// promSeries is one series of a query result: its labels and [unix seconds, value] samples.
type promSeries struct {
	Metric map[string]string `json:"metric"`
	Values [][2]float64      `json:"values"`
}

func (s promSeries) String() string { return fmt.Sprintf("%v%v", s.Metric, s.Values) }

// prometheus is a real Prometheus server started for one test.
type prometheus struct {
	base string
}

func startPrometheus(t *testing.T, target, rulesFile string) *prometheus {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: wsgate
    static_configs:
      - targets: [%q]
`, rulesFile, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "prometheus", "prometheus", "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	waitHTTP(t, "prometheus ready", "http://"+addr+"/-/ready", p)
	prom := &prometheus{base: "http://" + addr}
	// Wait for the first successful scrape.
	var last error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		res, err := prom.query(`up{job="wsgate"} == 1`)
		if err == nil && len(res) == 1 {
			return prom
		}
		if last = err; time.Now().After(deadline) {
			t.Fatalf("prometheus has not scraped wsgate within 20s (%v)", last)
		}
	}
}

type apiResponse struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
		Groups     []struct {
			Rules []struct {
				Name      string `json:"name"`
				Type      string `json:"type"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"data"`
}

func (p *prometheus) get(path string, params url.Values) (*apiResponse, error) {
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r apiResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", resp.Status, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", resp.Status, r.Error)
	}
	return &r, nil
}

// query runs an instant query now and returns its samples as one-point series.
func (p *prometheus) query(expr string) ([]promSeries, error) {
	r, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", r.Data.ResultType)
	}
	var out []promSeries
	for _, raw := range r.Data.Result {
		var s struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		out = append(out, promSeries{Metric: s.Metric, Values: [][2]float64{sample(s.Value)}})
	}
	return out, nil
}

func (p *prometheus) queryRange(expr string, from, to time.Time, step time.Duration) ([]promSeries, error) {
	r, err := p.get("/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatInt(from.Unix(), 10)}, "end": {strconv.FormatInt(to.Unix(), 10)}, "step": {step.String()}})
	if err != nil {
		return nil, err
	}
	var out []promSeries
	for _, raw := range r.Data.Result {
		var s struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		ps := promSeries{Metric: s.Metric}
		for _, v := range s.Values {
			ps.Values = append(ps.Values, sample(v))
		}
		out = append(out, ps)
	}
	return out, nil
}

// sample converts Prometheus' [unix seconds, "value"] pair.
func sample(v [2]any) [2]float64 {
	ts, _ := v[0].(float64)
	s, _ := v[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		f = math.NaN()
	}
	return [2]float64{ts, f}
}

type ruleHealth struct{ Health, LastError string }

// rules returns the alerting rules Prometheus loaded, by name, once each has been evaluated.
func (p *prometheus) rules(t *testing.T) map[string]ruleHealth {
	var out map[string]ruleHealth
	wstest.WaitFor(t, "every rule evaluated", func() bool {
		r, err := p.get("/api/v1/rules", url.Values{"type": {"alert"}})
		if err != nil {
			return false
		}
		out = map[string]ruleHealth{}
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				if rule.Health == "unknown" {
					return false
				}
				out[rule.Name] = ruleHealth{rule.Health, rule.LastError}
			}
		}
		return len(out) > 0
	})
	return out
}

// process is a child process stopped at cleanup; its output is kept for failure messages.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *wstest.LogSink
	done chan error
}

func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, args...), out: &wstest.LogSink{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(p.out.String(), 4000))
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		p.done <- err // for cleanup
		if err != nil {
			t.Errorf("%s exited with %v", p.name, err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not exit within 15s of SIGINT", p.name)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func waitHTTP(t *testing.T, what, u string, p *process) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited before %s: %v\n%s", p.name, what, err, tail(p.out.String(), 4000))
		default:
		}
		resp, err := c.Get(u)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s\n%s", what, tail(p.out.String(), 4000))
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
