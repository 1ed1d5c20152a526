package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
)

var wsgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsgate-bin")
	if err != nil {
		panic(err)
	}
	wsgateBin = filepath.Join(dir, "wsgate")
	if out, err := exec.Command("go", "build", "-o", wsgateBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build wsgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "wsgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

const validConfig = `
listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:1"
auth:
  hmac_secret: "` + wstest.Secret + `"
routes:
  - path: /ws/chat
    upstream: ws://127.0.0.1:8000/ws/chat
`

func TestValidateNamesEveryBadKey(t *testing.T) {
	cases := map[string]struct {
		yaml     string
		env      map[string]string
		wantCode int
		want     []string // substrings of stderr, one per problem
	}{
		"valid": {yaml: validConfig, wantCode: 0},
		"unknown keys": {
			yaml: validConfig + "\nlisten_addr: x\nauth2: {hmac_secret: x}\n",
			want: []string{"config: auth2.hmac_secret: unknown key", "config: listen_addr: unknown key"}, wantCode: 1,
		},
		"unknown nested and route keys": {
			yaml: `
auth: {hmac_secret: "` + wstest.Secret + `", hmac_secrett: x}
routes: [{path: /a, upstreem: "ws://x"}]
`,
			want: []string{"auth.hmac_secrett: unknown key", "routes[0].upstreem: unknown key"}, wantCode: 1,
		},
		"bad values": {
			yaml: `
listen: "8080"
heartbeat: {interval: 5s, timeout: 1ns}
allowed_origins: ["example.com"]
log_level: loud
auth: {hmac_secret: "short-secret", leeway: -1s}
routes:
  - {path: /ws/a, upstream: "http://x/a"}
  - {path: /ws/b}
  - {path: "ws/c", upstream: "ws://x/{nope}"}
  - {path: "/ws/d/{id}", subscribe: ["d:{id}:{claims.}"], require: {other: sid}}
`,
			want: []string{
				`config: listen: "8080" is not host:port`,
				"config: heartbeat.timeout: 1ns is too short",
				"config: allowed_origins[0]:",
				"config: log_level:",
				"config: auth.hmac_secret: is 12 bytes; at least 32 are required",
				"config: auth.leeway: must not be negative",
				"config: routes[0].upstream: must be a ws:// or wss:// URL",
				"config: routes[1].upstream: a route needs at least one of upstream, subscribe, publish",
				"config: routes[2].path: must start with /",
				"config: routes[3].subscribe[0]: unknown placeholder {claims.}",
				"config: routes[3].require.other: path has no parameter {other}",
			},
			wantCode: 1,
		},
		"type error names the key": {
			yaml:     validConfig + "max_message_bytes: lots\n",
			want:     []string{"max_message_bytes"},
			wantCode: 1,
		},
		"no key source": {
			yaml:     "routes: [{path: /a, upstream: 'ws://x/a'}]\n",
			want:     []string{"config: auth.hmac_secret: no key source"},
			wantCode: 1,
		},
		"env supplies the secret": {
			yaml:     "routes: [{path: /a, upstream: 'ws://x/a'}]\n",
			env:      map[string]string{"WSGATE_AUTH_HMAC_SECRET": wstest.Secret},
			wantCode: 0,
		},
		"env overrides the file": {
			yaml:     validConfig,
			env:      map[string]string{"WSGATE_HEARTBEAT_INTERVAL": "abc"},
			want:     []string{"heartbeat.interval"},
			wantCode: 1,
		},
		"upstream_tls problems": {
			yaml: validConfig + "upstream_tls: {ca_file: /nonexistent/ca.pem, cert_file: /x.pem}\n",
			want: []string{
				"config: upstream_tls.ca_file: cannot read /nonexistent/ca.pem",
				"config: upstream_tls.cert_file, upstream_tls.key_file: set both or neither",
			},
			wantCode: 1,
		},
		"no routes": {
			yaml:     "auth: {hmac_secret: '" + wstest.Secret + "'}\n",
			want:     []string{"config: routes: at least one route is required"},
			wantCode: 1,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, out, errs := runCLI("validate", "--config", writeConfig(t, tc.yaml))
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, out, errs)
			}
			if code == 0 && !strings.Contains(out, "config OK") {
				t.Errorf("stdout = %q, want config OK", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
			if strings.Contains(errs, "short-secret") {
				t.Error("the secret value was printed")
			}
		})
	}
}

func TestTokenAndVersionCommands(t *testing.T) {
	code, out, errs := runCLI("token", "--secret", wstest.Secret, "--sub", "bob", "--tenant", "acme", "--claim", "sid=s1,s2", "--ttl", "5m")
	if code != 0 {
		t.Fatalf("token: %d %s", code, errs)
	}
	v, err := auth.New(auth.Config{HMACSecret: []byte(wstest.Secret)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("the minted token does not verify: %v", err)
	}
	if id.User != "bob" || id.Tenant != "acme" || strings.Join(id.ClaimValues("sid"), ",") != "s1,s2" {
		t.Errorf("minted identity %q/%q sid %v", id.User, id.Tenant, id.ClaimValues("sid"))
	}
	if left := time.Until(id.Expiry); left < 4*time.Minute || left > 5*time.Minute {
		t.Errorf("expiry in %v, want about 5m", left)
	}
	if code, _, errs := runCLI("token", "--secret", "short"); code != 1 || !strings.Contains(errs, "at least 32 bytes") {
		t.Errorf("short secret: exit %d %q", code, errs)
	}
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "wsgate ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, _ := runCLI("bogus"); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
}

func TestProbe(t *testing.T) {
	var status = http.StatusOK
	var mu sync.Mutex
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	defer func() { srv.Close(); <-done }()
	if code, _, errs := runCLI("probe", "--addr", l.Addr().String(), "/readyz"); code != 0 {
		t.Errorf("probe 200: exit %d %s", code, errs)
	}
	mu.Lock()
	status = http.StatusServiceUnavailable
	mu.Unlock()
	if code, _, _ := runCLI("probe", "--addr", l.Addr().String(), "/readyz"); code != 1 {
		t.Errorf("probe 503: exit %d, want 1", code)
	}
	if code, _, _ := runCLI("probe", "--addr", freeAddr(t)); code != 1 {
		t.Errorf("probe with nothing listening: exit %d, want 1", code)
	}
}

// process is a wsgate child process with its stderr captured.
type process struct {
	cmd    *exec.Cmd
	stderr *wstest.LogSink
	done   chan error
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(wsgateBin, args...), stderr: &wstest.LogSink{}, done: make(chan error, 1)}
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func httpStatus(url string) int {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestSIGTERMDrainsRealProcess(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
shutdown_grace: 2s
auth: {hmac_secret: %q}
routes:
  - {path: /ws/echo, upstream: "%s/echo"}
`, listen, admin, wstest.Secret, up.WSURL()))
	p := start(t, "serve", "--config", cfg)
	wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })

	tok := wstest.Token(t, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.Write(ctx, websocket.MessageText, []byte("ping"))
	if _, b, err := c.Read(ctx); err != nil || string(b) != "ping" {
		t.Fatalf("echo through the process: %q %v", b, err)
	}

	// /metrics on the admin listener: the series, no identities.
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`wsgate_connections_active{route="/ws/echo"} 1`,
		`wsgate_handshakes_total{result="ok",route="/ws/echo"} 1`,
		`wsgate_handshake_duration_seconds_count{route="/ws/echo"} 1`,
		`wsgate_upstream_dial_duration_seconds_count{route="/ws/echo"} 1`,
		`wsgate_messages_total{direction="client_to_upstream",route="/ws/echo"} 1`,
		`wsgate_message_bytes_total{direction="upstream_to_client",route="/ws/echo"} 4`,
		`wsgate_bridge_subscriptions 0`,
		`go_goroutines`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if bytes.Contains(metrics, []byte("alice")) || bytes.Contains(metrics, []byte(tok)) {
		t.Error("/metrics carries a user id or the token")
	}

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	wstest.WaitFor(t, "readyz 503", func() bool { return httpStatus("http://"+admin+"/readyz") == 503 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("readyz took %v to turn 503", d)
	}
	if _, resp, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo?token="+tok, nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Errorf("new upgrade during drain: %v, want 503", err)
	}
	_, _, err = c.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Errorf("client close = %d (%v), want 1001", code, err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit: %v, want status 0\n%s", err, p.stderr.String())
		}
		p.done <- nil
	case <-time.After(6 * time.Second):
		t.Fatal("process did not exit after drain")
	}
	logs := p.stderr.String()
	for _, want := range []string{`"msg":"connection_opened"`, `"msg":"connection_closed"`, `"client_close_code":1001`, `"msg":"draining"`, `"msg":"wsgate_stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if strings.Contains(logs, tok) || strings.Contains(logs, wstest.Secret) {
		t.Error("the token or secret reached the logs")
	}
}

func TestDemoStreamsTokensEndToEnd(t *testing.T) {
	listen, admin := freeAddr(t), freeAddr(t)
	t.Setenv("WSGATE_SHUTDOWN_GRACE", "1s")
	p := start(t, "demo", "--listen", listen, "--admin-listen", admin)
	wstest.WaitFor(t, "demo ready", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })

	resp, err := http.Get("http://" + listen + "/demo/token?user=dora&tenant=acme&session=s9")
	if err != nil {
		t.Fatal(err)
	}
	var tr struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	chat, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/chat?token="+tr.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer chat.CloseNow()
	read := func(c *websocket.Conn) string {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v\n%s", err, p.stderr.String())
		}
		return string(b)
	}
	if got := read(chat); got != `{"type":"hello","data":{"tenant":"acme","user":"dora"}}` {
		t.Errorf("hello = %s (the upstream must see x-user-id and x-tenant-id)", got)
	}
	chat.Write(ctx, websocket.MessageText, []byte("revenue by region"))
	var words []string
	for {
		var ev struct {
			Type string
			Data struct {
				Token string
				Index int
			}
		}
		json.Unmarshal([]byte(read(chat)), &ev)
		if ev.Type == "complete" {
			break
		}
		if ev.Type != "token" || ev.Data.Index != len(words) {
			t.Fatalf("unexpected event %+v", ev)
		}
		words = append(words, ev.Data.Token)
	}
	if got := strings.Join(words, " "); got != "echo: revenue by region" {
		t.Errorf("streamed %q", got)
	}

	// The bridge route through the in-process broker.
	if _, resp, _ := websocket.Dial(ctx, "ws://"+listen+"/ws/ai/stream/other?token="+tr.Token, nil); resp == nil || resp.StatusCode != 403 {
		t.Errorf("another session's stream must be 403")
	}
	ai, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/ai/stream/s9?token="+tr.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ai.CloseNow()
	if r, err := http.Post("http://"+listen+"/demo/ask?session=s9", "text/plain", strings.NewReader("why")); err != nil || r.StatusCode != 202 {
		t.Fatalf("ask: %v", err)
	}
	if got := read(ai); got != `{"type":"token","data":{"index":0,"token":"answer:"}}` {
		t.Errorf("first AI token = %s", got)
	}
	if got := read(ai); got != `{"type":"token","data":{"index":1,"token":"why"}}` {
		t.Errorf("second AI token = %s", got)
	}
	if got := read(ai); got != `{"type":"complete","data":{"tokens":2}}` {
		t.Errorf("complete = %s", got)
	}
	// The admin publish API, both forms, through the same broker.
	for _, req := range []struct{ url, body string }{
		{"http://" + admin + "/publish?channel=ai:stream:s9", "raw bytes"},
		{"http://" + admin + "/publish", `{"channel":"ai:stream:s9","data":{"type":"token","data":{"index":7}}}`},
	} {
		r, err := http.Post(req.url, "application/json", strings.NewReader(req.body))
		if err != nil || r.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %s: %v %v", req.url, err, r)
		}
		r.Body.Close()
	}
	if got := read(ai); got != "raw bytes" {
		t.Errorf("raw publish delivered %q", got)
	}
	if got := read(ai); got != `{"type":"token","data":{"index":7}}` {
		t.Errorf("JSON publish delivered %q", got)
	}
	r, err := http.Post("http://"+admin+"/publish", "application/json", strings.NewReader(`{"data":1}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusBadRequest {
		t.Errorf("publish without a channel: %d, want 400", r.StatusCode)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Errorf("demo exit: %v", err)
	}
	p.done <- nil
}

func TestSlowlorisAndHugeRequestsAreCut(t *testing.T) {
	up := wstest.NewUpstream(t)
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
limits: {read_header_timeout: 500ms, max_header_bytes: 8192}
auth: {hmac_secret: %q}
routes: [{path: /ws/echo, upstream: "%s/echo"}]
`, listen, admin, wstest.Secret, up.WSURL()))
	start(t, "serve", "--config", cfg)
	wstest.WaitFor(t, "ready", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })

	// A client trickling header bytes is cut at read_header_timeout.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	fmt.Fprint(c, "GET /ws/echo HTTP/1.1\r\nHost: x\r\n")
	cut := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				cut <- time.Since(begin)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case d := <-cut:
		if d > 1500*time.Millisecond {
			t.Errorf("slowloris connection lived %v, want about 500ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slowloris connection was never cut")
	}

	// A 1 MB token in the query is refused before any parsing of it.
	huge := strings.Repeat("a", 1<<20)
	resp, err := http.Get("http://" + listen + "/ws/echo?token=" + huge)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("1 MB query: %d, want 431", resp.StatusCode)
	}
}

// TestReadmeConfigValidates keeps the README's configuration reference a
// config a newcomer can copy: it must pass `wsgate validate`.
func TestReadmeConfigValidates(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "## Configuration reference")
	if !ok {
		t.Fatal("README has no configuration reference")
	}
	_, block, ok := strings.Cut(rest, "```yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in the configuration reference")
	}
	// Every key wsgate knows is documented there.
	keys := []string{"routes:", "history:", "max_message_bytes", "max_replay_bytes"}
	for k := range defaults {
		parts := strings.Split(k, ".")
		keys = append(keys, parts[len(parts)-1]+":")
		for _, section := range parts[:len(parts)-1] {
			keys = append(keys, section+":")
		}
	}
	for _, key := range keys {
		if !strings.Contains(block, key) {
			t.Errorf("the configuration reference lacks %s", key)
		}
	}
	t.Setenv("WSGATE_AUTH_HMAC_SECRET", wstest.Secret)
	if code, out, errs := runCLI("validate", "--config", writeConfig(t, block)); code != 0 {
		t.Errorf("README config: exit %d\n%s%s", code, out, errs)
	}
}

// A wss:// upstream signed by a private CA, trusted through
// upstream_tls.ca_file, in a real wsgate process.
func TestServeWSSUpstreamWithPrivateCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		if r.Header.Get("X-User-Id") != "alice" || r.Header.Get("Authorization") == "" {
			c.Close(websocket.StatusPolicyViolation, "no identity headers")
			return
		}
		typ, b, err := c.Read(r.Context())
		if err == nil {
			c.Write(r.Context(), typ, append([]byte("tls:"), b...))
		}
		c.Close(websocket.StatusNormalClosure, "")
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
upstream_tls: {ca_file: %q}
routes:
  - {path: /ws/secure, upstream: "wss://%s/"}
`, listen, admin, wstest.Secret, ca, srv.Listener.Addr().String()))
	start(t, "serve", "--config", cfg)
	wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/secure?token="+wstest.Token(t, "alice", nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "tls:hi" {
		t.Fatalf("got %q, %v; want \"tls:hi\"", b, err)
	}

	// Without the CA the same upstream is refused: 502 before any upgrade.
	listen2, admin2 := freeAddr(t), freeAddr(t)
	cfg2 := writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
routes:
  - {path: /ws/secure, upstream: "wss://%s/"}
`, listen2, admin2, wstest.Secret, srv.Listener.Addr().String()))
	start(t, "serve", "--config", cfg2)
	wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+admin2+"/readyz") == 200 })
	_, resp, err := websocket.Dial(ctx, "ws://"+listen2+"/ws/secure?token="+wstest.Token(t, "alice", nil), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("untrusted upstream: %v (response %v), want 502", err, resp)
	}
}
