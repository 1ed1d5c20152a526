package traefik_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
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

	"github.com/wsgate/wsgate/internal/wstest"
)

// host is the name deploy/traefik routes on; clients reach it on the test's entry point.
const host = "app.example.com"

// stackOpts changes one run from what deploy/ ships; every change is named by the test using it.
type stackOpts struct {
	accessFormat string         // "common" (Traefik's default) or "json"
	wsgateLimits map[string]any // merged into wsgate's limits:
	static       func(tree)     // edits Traefik's static configuration
	dynamic      func(tree)     // edits the translated dynamic configuration
}

// stack is one run of the gateway path: Traefik (TLS entry point) → wsgate → upstream, and
// Traefik → ForwardAuth (wsgate /auth/verify) → the BI backend.
type stack struct {
	up     *wstest.Upstream
	bi     *recorder
	wsgate *process
	proxy  *process
	addr   string // Traefik's websecure entry point
	roots  *x509.CertPool
	dir    string
	wsAddr string // wsgate's public listener
}

func startStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	if o.accessFormat == "" {
		o.accessFormat = "common"
	}
	s := &stack{dir: t.TempDir(), up: wstest.NewUpstream(t), bi: newRecorder(t)}
	s.up.Serve = stream
	s.wsAddr = freeAddr(t)
	adminAddr := freeAddr(t)
	s.addr = freeAddr(t)

	// wsgate: deploy/base's config with loopback addresses and the test upstream.
	cfg := readYAML[tree](t, filepath.Join(repoRoot, "deploy", "base", "wsgate-config.yaml"))[0]
	cfg["listen"] = s.wsAddr
	cfg["admin_listen"] = adminAddr
	cfg["log_level"] = "debug" // the most a token could reach
	cfg["shutdown_grace"] = "1s"
	delete(cfg, "redis") // one replica: the in-process broker
	routes := asList(cfg["routes"])
	chat := routes[0].(tree)
	if chat["path"] != "/ws/chat" {
		t.Fatalf("deploy/base's first route is %v, want /ws/chat", chat["path"])
	}
	chat["upstream"] = s.up.WSURL() + "/ws/chat"
	limits := tree{}
	for k, v := range o.wsgateLimits {
		limits[k] = v
	}
	cfg["limits"] = limits
	cfgFile := filepath.Join(s.dir, "wsgate.yaml")
	writeYAML(t, cfgFile, cfg)
	s.wsgate = startProcess(t, "wsgate", wsgateBin, []string{"WSGATE_AUTH_HMAC_SECRET=" + wstest.Secret}, "serve", "--config", cfgFile)
	waitHTTP(t, s.wsgate, "http://"+adminAddr+"/readyz", http.DefaultClient, func(code int) bool { return code == http.StatusOK })

	// Traefik: deploy/traefik, translated.
	cert, key := s.certificate(t)
	be := backends{
		"ai-service": {"http": s.wsAddr, "8080": s.wsAddr},
		"bi-api":     {"8000": strings.TrimPrefix(s.bi.URL, "http://")},
	}
	dyn := dynamicConfig(t, be, cert, key)
	if o.dynamic != nil {
		o.dynamic(dyn)
	}
	dynFile := filepath.Join(s.dir, "dynamic.yaml")
	writeYAML(t, dynFile, dyn)
	st := staticConfig(t, s.addr, dynFile, filepath.Join(s.dir, "traefik.log"), filepath.Join(s.dir, "access.log"), o.accessFormat)
	if o.static != nil {
		o.static(st)
	}
	stFile := filepath.Join(s.dir, "traefik.yaml")
	writeYAML(t, stFile, st)
	s.proxy = startProcess(t, "traefik", traefikBin, nil, "--configFile="+stFile)
	// Ready once the router is loaded: wsgate answers a plain GET on /ws/chat (not 404).
	waitHTTP(t, s.proxy, "https://"+host+"/ws/chat", s.httpClient("127.0.0.1"), func(code int) bool { return code != http.StatusNotFound })
	return s
}

// certificate writes a self-signed certificate for host and keeps it as the clients' root.
func (s *stack) certificate(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	s.roots = x509.NewCertPool()
	s.roots.AddCert(c)
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(s.dir, "tls.crt"), filepath.Join(s.dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// httpClient reaches https://app.example.com/ on the entry point from source address src
// (127.0.0.1 or 127.0.0.2: Linux routes all of 127/8 to loopback), over HTTP/1.1 as browsers
// open WebSockets.
func (s *stack) httpClient(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, s.addr)
			},
			TLSClientConfig:   &tls.Config{RootCAs: s.roots, ServerName: host},
			DisableKeepAlives: true,
		},
	}
}

// wsURL is the browser-facing URL of a path on the entry point.
func (s *stack) wsURL(pathAndQuery string) string {
	return "wss://" + host + ":" + port(s.addr) + pathAndQuery
}

// dial opens a WebSocket through Traefik from src; on a refused handshake it returns the status
// and body instead.
func (s *stack) dial(t *testing.T, src, pathAndQuery string, hdr http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	h := http.Header{"Origin": {"https://" + host}}
	for k, v := range hdr {
		h[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, s.wsURL(pathAndQuery), &websocket.DialOptions{HTTPClient: s.httpClient(src), HTTPHeader: h})
	if err == nil {
		t.Cleanup(func() { c.CloseNow() })
		return c, http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial %s from %s: no response: %v", pathAndQuery, src, err)
	}
	// coder/websocket keeps up to 1 KiB of a refused handshake's body.
	body, _ := io.ReadAll(resp.Body)
	return nil, resp.StatusCode, string(body)
}

// get sends a plain HTTPS request through Traefik.
func (s *stack) get(t *testing.T, pathAndQuery string, hdr http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+host+":"+port(s.addr)+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := s.httpClient("127.0.0.1").Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", pathAndQuery, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// stream answers each message with three chunks, as an AI service streams tokens.
func stream(ctx context.Context, c *websocket.Conn, _ *http.Request) {
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		for i := 1; i <= 3; i++ {
			if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "%s #%d", b, i)); err != nil {
				return
			}
		}
	}
}

// recorder is a plain HTTP backend (the BI API) that keeps every request it receives.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Clone(context.Background()))
		r.mu.Unlock()
		io.WriteString(w, "report")
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *recorder) last(t *testing.T) *http.Request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("the BI backend saw no request")
	}
	return r.reqs[len(r.reqs)-1]
}

// process is a child process whose output is kept for the test's assertions.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

func startProcess(t *testing.T, name, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output (last 40 lines):\n%s", name, lastLines(p.out.String(), 40))
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP polls url until ready accepts the status, for up to 20s.
func waitHTTP(t *testing.T, p *process, url string, c *http.Client, ready func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if ready(resp.StatusCode) {
				return
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s (last error %v):\n%s", p.name, url, err, lastLines(p.out.String(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
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

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
