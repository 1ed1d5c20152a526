package traefik_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
)

// token mints a token deploy/base's wsgate config accepts (its issuer and audience).
func token(t *testing.T, user string, extra map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": "https://auth.example.com", "aud": []string{"ai-service"}}
	for k, v := range extra {
		c[k] = v
	}
	return wstest.Token(t, user, c)
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// roundTrip sends msg and wants the upstream's three streamed chunks back.
func roundTrip(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	for i := 1; i <= 3; i++ {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read chunk %d: %v", i, err)
		}
		if want := msg + " #" + string(rune('0'+i)); string(b) != want {
			t.Fatalf("chunk %d = %q, want %q", i, b, want)
		}
	}
}

// TestChromiumThroughTraefik: a real browser page on https://app.example.com opens
// wss://app.example.com/ws/chat?token= through Traefik's TLS entry point and streams. The socket
// then stays idle for longer than Traefik's readTimeout and the ServersTransport's
// idleConnTimeout (both lowered for this run) and still streams: neither applies to an upgraded
// WebSocket, which is why deploy/traefik no longer asks for readTimeout: 3600s.
func TestChromiumThroughTraefik(t *testing.T) {
	jsDir := filepath.Join(repoRoot, "clients", "js")
	if _, err := os.Stat(filepath.Join(jsDir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in clients/js (scripts/test-gateway.sh runs npm ci): %v", err)
	}
	s := startStack(t, stackOpts{
		static: func(st tree) {
			set(st, "2s", "entryPoints", "websecure", "transport", "respondingTimeouts", "readTimeout")
		},
		dynamic: func(d tree) {
			set(get(t, d, "http", "serversTransports", "wsgate"), "1s", "forwardingTimeouts", "idleConnTimeout")
		},
	})
	tok := token(t, "alice", nil)
	in, err := json.Marshal(map[string]any{
		"chromium": chromiumPath(),
		"port":     port(s.addr),
		"url":      s.wsURL("/ws/chat?token=" + tok),
		"idleMs":   3500,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(repoRoot, "e2e", "traefik", "testdata", "browser.mjs"))
	cmd.Env = append(os.Environ(), "WSGATE_JS_DIR="+jsDir, "E2E_BROWSER="+string(in))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("browser: %v\n%s", err, out)
	}
	var got struct {
		Origin   string   `json:"origin"`
		Messages []string `json:"messages"`
		Close    int      `json:"close"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("browser output %q: %v", out, err)
	}
	want := []string{"hello #1", "hello #2", "hello #3", "after idle #1", "after idle #2", "after idle #3"}
	if !slices.Equal(got.Messages, want) {
		t.Errorf("page received %q, want %q", got.Messages, want)
	}
	if got.Origin != "https://"+host {
		t.Errorf("page origin %q", got.Origin)
	}
	if got.Close != 1000 {
		t.Errorf("page saw close code %d, want 1000", got.Close)
	}
	r := s.up.LastRequest(t)
	if r.Header.Get("X-User-Id") != "alice" || strings.Contains(r.URL.RawQuery, tok) {
		t.Errorf("upstream saw X-User-Id %q, query %q", r.Header.Get("X-User-Id"), r.URL.RawQuery)
	}
}

func chromiumPath() string {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// TestUpstreamHeaders: behind Traefik the upstream gets exactly the headers README documents,
// with X-Forwarded-Proto "wss" (Traefik's value for a TLS upgrade, passed on by wsgate), the
// client's address first in X-Forwarded-For, and nothing a client tried to slip in.
func TestUpstreamHeaders(t *testing.T) {
	s := startStack(t, stackOpts{})
	tok := token(t, "alice", nil)
	c, status, body := s.dial(t, "127.0.0.2", "/ws/chat?lang=en&token="+tok, http.Header{
		"X-User-Id":    {"mallory"},
		"X_User_Id":    {"mallory"},
		"X-Tenant-Id":  {"evil"},
		"Cookie":       {"session=secret"},
		"User-Agent":   {"e2e-client/1"},
		"X-Request-Id": {"req-42"},
	})
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %d %s", status, body)
	}
	roundTrip(t, c, "hello")
	r := s.up.LastRequest(t)
	want := map[string]string{
		"Authorization":     "Bearer " + tok,
		"X-User-Id":         "alice",
		"X-Tenant-Id":       "t1",
		"X-Request-Id":      "req-42",
		"X-Forwarded-For":   "127.0.0.2, 127.0.0.1",
		"X-Forwarded-Proto": "wss",
		"X-Forwarded-Host":  host + ":" + port(s.addr),
		"User-Agent":        "e2e-client/1",
	}
	// The WebSocket handshake's own headers, which the upstream needs to answer.
	handshake := map[string]bool{"Connection": true, "Upgrade": true, "Sec-Websocket-Key": true, "Sec-Websocket-Version": true, "Sec-Websocket-Extensions": true}
	for name, vals := range r.Header {
		if handshake[name] {
			continue
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("upstream got undocumented header %s: %q", name, vals)
			continue
		}
		if len(vals) != 1 || vals[0] != w {
			t.Errorf("upstream %s = %q, want %q", name, vals, w)
		}
	}
	for name := range want {
		if _, ok := r.Header[name]; !ok {
			t.Errorf("upstream got no %s", name)
		}
	}
	if r.URL.RawQuery != "lang=en" || r.URL.Path != "/ws/chat" {
		t.Errorf("upstream URL %s?%s, want /ws/chat?lang=en", r.URL.Path, r.URL.RawQuery)
	}
}

// TestBadTokens: refused handshakes come back through Traefik as wsgate sent them: 401 and
// wsgate's body, which names the reason and never the token.
func TestBadTokens(t *testing.T) {
	s := startStack(t, stackOpts{})
	expired := token(t, "alice", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	otherAudience := token(t, "alice", map[string]any{"aud": []string{"billing"}})
	for name, tc := range map[string]struct {
		query string
		hdr   http.Header
	}{
		"no token":        {query: ""},
		"garbage query":   {query: "?token=not-a-jwt"},
		"expired":         {query: "?token=" + expired},
		"wrong audience":  {query: "?token=" + otherAudience},
		"garbage bearer":  {hdr: bearer("not-a-jwt")},
		"tampered bearer": {hdr: bearer(token(t, "alice", nil) + "x")},
	} {
		t.Run(name, func(t *testing.T) {
			_, status, body := s.dial(t, "127.0.0.1", "/ws/chat"+tc.query, tc.hdr)
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401 (body %q)", status, body)
			}
			direct := directRefusal(t, s, "/ws/chat"+tc.query, tc.hdr)
			if !strings.HasPrefix(body, "Unauthorized: ") || body != direct {
				t.Errorf("body through Traefik %q, wsgate's own %q", body, direct)
			}
		})
	}
}

// directRefusal is wsgate's body for the same refused handshake without Traefik.
func directRefusal(t *testing.T, s *stack, pathAndQuery string, hdr http.Header) string {
	t.Helper()
	h := http.Header{"Origin": {"https://" + host}}
	for k, v := range hdr {
		h[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+s.wsAddr+pathAndQuery, &websocket.DialOptions{HTTPHeader: h})
	if err == nil {
		c.CloseNow()
		t.Fatal("wsgate accepted the handshake directly")
	}
	if resp == nil {
		t.Fatalf("direct dial: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestInflightPerClient: deploy/traefik's inFlightReq caps open sockets per client address. With
// `amount` lowered to 1 for this run, a second socket from 127.0.0.1 is refused while 127.0.0.2
// still gets its own. (With ipStrategy depth 1 Traefik keys on an X-Forwarded-For hop that is
// empty at the edge, and 127.0.0.2 was refused too.)
func TestInflightPerClient(t *testing.T) {
	s := startStack(t, stackOpts{dynamic: func(d tree) {
		set(get(t, d, "http", "middlewares", "wsgate-inflight"), 1, "inFlightReq", "amount")
	}})
	tok := bearer(token(t, "alice", nil))
	first, status, body := s.dial(t, "127.0.0.1", "/ws/chat", tok)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("first socket: %d %s", status, body)
	}
	roundTrip(t, first, "held")
	if _, status, body := s.dial(t, "127.0.0.1", "/ws/chat", tok); status != http.StatusTooManyRequests {
		t.Fatalf("second socket from 127.0.0.1: %d %q, want 429", status, body)
	}
	other, status, body := s.dial(t, "127.0.0.2", "/ws/chat", tok)
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("socket from 127.0.0.2: %d %q, want 101 (its own budget)", status, body)
	}
	roundTrip(t, other, "separate")
}

// TestPerIPHandshakeLimit: wsgate's per-IP handshake rate keys on the client behind Traefik. Both
// the client and Traefik are in limits.trusted_proxies (loopback), as intranet users in private
// ranges are by default; wsgate used to key on Traefik's address then, putting everyone in one
// bucket.
func TestPerIPHandshakeLimit(t *testing.T) {
	s := startStack(t, stackOpts{wsgateLimits: map[string]any{"handshakes_per_second_per_ip": 1}})
	tok := bearer(token(t, "alice", nil))
	refused := false
	for i := 0; i < 6 && !refused; i++ { // 1/s, burst 2: the third handshake within a second is refused
		_, status, body := s.dial(t, "127.0.0.1", "/ws/chat", tok)
		switch status {
		case http.StatusSwitchingProtocols:
		case http.StatusTooManyRequests:
			refused = true
			if !strings.Contains(body, "client address") {
				t.Errorf("429 body %q does not name the client address limit", body)
			}
		default:
			t.Fatalf("handshake %d: %d %q", i, status, body)
		}
	}
	if !refused {
		t.Fatal("127.0.0.1 was never rate limited")
	}
	if _, status, body := s.dial(t, "127.0.0.2", "/ws/chat", tok); status != http.StatusSwitchingProtocols {
		t.Fatalf("127.0.0.2 after 127.0.0.1 was limited: %d %q, want 101 (its own bucket)", status, body)
	}
}

// TestForwardAuth: the BI route reuses wsgate's check through Traefik ForwardAuth, with the token
// in the Authorization header or the query.
func TestForwardAuth(t *testing.T) {
	s := startStack(t, stackOpts{})
	tok := token(t, "alice", nil)
	t.Run("header token", func(t *testing.T) {
		h := bearer(tok)
		h.Set("X-User-Id", "mallory")
		status, body := s.get(t, "/api/reports/q3", h)
		if status != http.StatusOK || body != "report" {
			t.Fatalf("%d %q, want 200 report", status, body)
		}
		r := s.bi.last(t)
		if got := r.Header.Values("X-User-Id"); !slices.Equal(got, []string{"alice"}) {
			t.Errorf("backend X-User-Id %q, want [alice]", got)
		}
		if got := r.Header.Values("X-Tenant-Id"); !slices.Equal(got, []string{"t1"}) {
			t.Errorf("backend X-Tenant-Id %q, want [t1]", got)
		}
	})
	t.Run("query token", func(t *testing.T) {
		status, body := s.get(t, "/api/reports/q3?token="+tok, nil)
		if status != http.StatusOK || body != "report" {
			t.Fatalf("%d %q, want 200 report", status, body)
		}
		r := s.bi.last(t)
		if got := r.Header.Get("X-User-Id"); got != "alice" {
			t.Errorf("backend X-User-Id %q, want alice", got)
		}
		// What docs/deploy.md warns about: ForwardAuth leaves the URL alone, so the backend
		// receives the token in its query string (and its own access log would record it).
		if !strings.Contains(r.URL.RawQuery, "token="+tok) {
			t.Errorf("backend query %q: the documented behaviour changed, update docs/deploy.md", r.URL.RawQuery)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		before := s.bi.count()
		status, body := s.get(t, "/api/reports/q3?token=not-a-jwt", nil)
		if status != http.StatusUnauthorized || !strings.HasPrefix(body, "Unauthorized: ") {
			t.Fatalf("%d %q, want 401 with wsgate's reason", status, body)
		}
		status, _ = s.get(t, "/api/reports/q3", nil)
		if status != http.StatusUnauthorized {
			t.Fatalf("no token: %d, want 401", status)
		}
		if after := s.bi.count(); after != before {
			t.Errorf("the backend saw %d refused requests", after-before)
		}
	})
}

// TestLookAlikeHeaders: X_User_Id and X.User.Id from a client never reach a backend. Traefik's
// entry point deletes them (aliasHeadersStrategy: delete in deploy/traefik/traefik.yaml); without
// it they reached the ForwardAuth backend next to the real X-User-Id. wsgate never forwards them
// to a WebSocket upstream (TestUpstreamHeaders).
func TestLookAlikeHeaders(t *testing.T) {
	s := startStack(t, stackOpts{})
	h := bearer(token(t, "alice", nil))
	h["X_User_Id"] = []string{"mallory"}
	h["X.User.Id"] = []string{"mallory"}
	h["X_Tenant_Id"] = []string{"evil"}
	status, body := s.get(t, "/api/reports/q3", h)
	if status != http.StatusOK {
		t.Fatalf("%d %q", status, body)
	}
	r := s.bi.last(t)
	for name, vals := range r.Header {
		norm := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
		if norm != "x-user-id" && norm != "x-tenant-id" {
			continue
		}
		if name != "X-User-Id" && name != "X-Tenant-Id" {
			t.Errorf("backend got look-alike %s: %q", name, vals)
		}
	}
	if got := r.Header.Values("X-User-Id"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("backend X-User-Id %q, want [alice]", got)
	}
}

// TestNoTokenInLogs: with deploy/traefik's access-log settings, no token reaches Traefik's access
// log in either format, nor Traefik's own log or wsgate's (at debug level), whether the handshake
// succeeds or not, and on the ForwardAuth route.
func TestNoTokenInLogs(t *testing.T) {
	for _, format := range []string{"common", "json"} {
		t.Run(format, func(t *testing.T) {
			s := startStack(t, stackOpts{accessFormat: format})
			good := token(t, "alice", nil)
			expired := token(t, "bob", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
			c, status, body := s.dial(t, "127.0.0.1", "/ws/chat?token="+good, nil)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("handshake: %d %s", status, body)
			}
			roundTrip(t, c, "hello")
			c.Close(websocket.StatusNormalClosure, "")
			s.dial(t, "127.0.0.1", "/ws/chat?token="+expired, nil)
			s.dial(t, "127.0.0.1", "/ws/chat", bearer(good))
			s.get(t, "/api/reports/q3?token="+good, nil)
			s.get(t, "/api/reports/q3", bearer(good))

			access := filepath.Join(s.dir, "access.log")
			var lines []string
			for deadline := time.Now().Add(10 * time.Second); ; {
				lines = strings.Split(strings.TrimSpace(readFile(t, access)), "\n")
				if len(lines) >= 5 || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if len(lines) < 5 {
				t.Fatalf("access log has %d lines, want 5:\n%s", len(lines), strings.Join(lines, "\n"))
			}
			if format == "json" {
				for _, l := range lines {
					var entry map[string]any
					if err := json.Unmarshal([]byte(l), &entry); err != nil {
						t.Fatalf("access log line %q: %v", l, err)
					}
				}
			}
			logs := map[string]string{
				"access log":    strings.Join(lines, "\n"),
				"traefik log":   readFile(t, filepath.Join(s.dir, "traefik.log")) + s.proxy.out.String(),
				"wsgate output": s.wsgate.out.String(),
			}
			if !strings.Contains(logs["wsgate output"], "\"level\"") {
				t.Fatalf("wsgate logged nothing:\n%s", logs["wsgate output"])
			}
			for what, text := range logs {
				for _, tok := range []string{good, expired} {
					sig := tok[strings.LastIndexByte(tok, '.')+1:]
					if strings.Contains(text, sig) || strings.Contains(text, "token=") {
						t.Errorf("%s holds a token:\n%s", what, text)
					}
				}
			}
		})
	}
}
