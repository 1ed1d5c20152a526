package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// rawRequest sends one HTTP/1.1 upgrade request with a literal request
// target (no client-side path cleaning) and returns the response.
func rawRequest(t *testing.T, addr, target string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n", target, addr)
	b.WriteString("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := ""
	if resp.StatusCode != http.StatusSwitchingProtocols {
		bb, _ := io.ReadAll(resp.Body)
		body = string(bb)
	}
	resp.Body.Close()
	return resp, body
}

// Issue 11, finding 7: unclean paths were redirected with the token in
// Location and the body. wsgate never redirects.
func TestUncleanPathsGet404WithoutTheToken(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, withRoutes(
		proxy.Route{Path: "/ws/chat", Upstream: up.WSURL() + "/echo"},
		proxy.Route{Path: "/ws/dir/", Upstream: up.WSURL() + "/echo"},
	))
	tok := wstest.Token(t, "alice", nil)
	addr := strings.TrimPrefix(g.URL, "http://")
	for _, target := range []string{
		"//ws/chat?token=" + tok,
		"/ws/./chat?token=" + tok,
		"/ws/x/../chat?token=" + tok,
		"/ws/chat/.?token=" + tok,
		"/ws/dir?token=" + tok, // net/http would redirect to /ws/dir/
	} {
		t.Run(target[:strings.IndexByte(target, '?')], func(t *testing.T) {
			resp, body := rawRequest(t, addr, target, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %d, want 404", resp.StatusCode)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("Location: %s", loc)
			}
			if strings.Contains(body, tok) || strings.Contains(fmt.Sprint(resp.Header), tok) {
				t.Errorf("the response echoes the token: %s", body)
			}
		})
	}
	// The clean forms still work.
	c := g.dial(t, "/ws/chat?token="+tok, nil)
	c.Close(websocket.StatusNormalClosure, "")
	c = g.dial(t, "/ws/dir/?token="+tok, nil)
	c.Close(websocket.StatusNormalClosure, "")
}

// Issue 11, finding 6: dot segments in path parameters reached the upstream.
func TestDotSegmentParametersGet400(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, withRoutes(
		proxy.Route{Path: "/ws/reports/{id}", Upstream: up.WSURL() + "/ws/reports/{id}/live"},
		proxy.Route{Path: "/ws/files/{path...}", Upstream: up.WSURL() + "/files/{path}"},
	))
	tok := wstest.Token(t, "alice", nil)
	addr := strings.TrimPrefix(g.URL, "http://")
	for _, target := range []string{
		"/ws/reports/%2E%2E", "/ws/reports/%2e", "/ws/reports/.%2E",
		"/ws/files/a/%2E%2E/b", "/ws/files/%2E%2E", "/ws/files/a%2F..%2Fb",
	} {
		t.Run(target, func(t *testing.T) {
			resp, body := rawRequest(t, addr, target+"?token="+tok, nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400 (%s)", resp.StatusCode, body)
			}
		})
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("the upstream was dialled %d times", n)
	}
	// An ordinary value with a dot passes, escaped.
	c := g.dial(t, "/ws/reports/q1.2024?token="+tok, nil)
	c.Close(websocket.StatusNormalClosure, "")
	if got := up.LastRequest(t).URL.Path; got != "/ws/reports/q1.2024/live" {
		t.Errorf("upstream path %q", got)
	}
}

// Issue 11, finding 1: "path: /" panicked at start; a catch-all route with a
// tail parameter forwards any path and its query.
func TestCatchAllRouteForwardsPathAndQuery(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, withRoutes(proxy.Route{Path: "/{path...}", Upstream: up.WSURL() + "/{path}"}))
	tok := wstest.Token(t, "alice", nil)
	c := g.dial(t, "/ws/bi/dash%20one/live?x=1&token="+tok, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Write(ctx, websocket.MessageText, []byte("hi"))
	if got := readText(t, c); got != "hi" {
		t.Fatalf("echo %q", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	r := up.LastRequest(t)
	if r.URL.EscapedPath() != "/ws/bi/dash%20one/live" || r.URL.RawQuery != "x=1" {
		t.Errorf("upstream got %s?%s", r.URL.EscapedPath(), r.URL.RawQuery)
	}
	// The ForwardAuth endpoint stays wsgate's under a catch-all.
	resp, err := http.Get(g.URL + "/auth/verify?token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-User-Id") != "alice" {
		t.Errorf("/auth/verify under a catch-all: %d %q", resp.StatusCode, resp.Header.Get("X-User-Id"))
	}

	// "path: /" alone is a catch-all too.
	g2 := newGateway(t, withRoutes(proxy.Route{Path: "/", Upstream: up.WSURL() + "/echo"}))
	c = g2.dial(t, "/anything/at/all?token="+tok, nil)
	c.Close(websocket.StatusNormalClosure, "")
}

// Issue 11, finding 9: the same-host Origin check ignored the scheme.
func TestSameHostOriginComparesScheme(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, withRoutes(echoRoute(up)))
	tok := wstest.Token(t, "alice", nil)
	host := strings.TrimPrefix(g.URL, "http://")

	// Plain HTTP listener: http origin passes, https does not.
	for origin, want := range map[string]int{"http://" + host: 101, "https://" + host: 403} {
		if got := g.status(t, "/ws/echo?token="+tok, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}}); got != want {
			t.Errorf("Origin %s over http: %d, want %d", origin, got, want)
		}
	}
	// Behind a trusted proxy (loopback) that says the client used https.
	for origin, want := range map[string]int{"http://" + host: 403, "https://" + host: 101} {
		opts := &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}, "X-Forwarded-Proto": {"https"}}}
		if got := g.status(t, "/ws/echo?token="+tok, opts); got != want {
			t.Errorf("Origin %s with X-Forwarded-Proto https: %d, want %d", origin, got, want)
		}
	}

	// A TLS listener: the http origin of the same host is refused.
	ts := httptest.NewTLSServer(g.h)
	defer ts.Close()
	tlsHost := strings.TrimPrefix(ts.URL, "https://")
	client := ts.Client()
	for origin, want := range map[string]int{"http://" + tlsHost: 403, "https://" + tlsHost: 101} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, resp, err := websocket.Dial(ctx, "wss://"+tlsHost+"/ws/echo?token="+tok, &websocket.DialOptions{
			HTTPClient: client, HTTPHeader: http.Header{"Origin": {origin}}})
		cancel()
		got := 0
		if err == nil {
			got = 101
			c.Close(websocket.StatusNormalClosure, "")
		} else if resp != nil {
			got = resp.StatusCode
		}
		if got != want {
			t.Errorf("Origin %s over TLS: %d, want %d (%v)", origin, got, want, err)
		}
	}
	client.CloseIdleConnections()
}

// Issue 11, finding 9: with two token cookies the first one won.
func TestDuplicateTokenCookiesGet401(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, func(o *gatewayOpts) {
		o.auth.Cookie = "wsgate_token"
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
	})
	good, other := wstest.Token(t, "alice", nil), wstest.Token(t, "mallory", nil)
	one := &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"wsgate_token=" + good}}}
	if got := g.status(t, "/ws/echo", one); got != 101 {
		t.Fatalf("one cookie: %d", got)
	}
	two := &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"wsgate_token=" + other + "; wsgate_token=" + good}}}
	if got := g.status(t, "/ws/echo", two); got != http.StatusUnauthorized {
		t.Fatalf("two cookies: %d, want 401", got)
	}
}

// Issue 11, finding 8: identities with two spellings, and booleans as sub.
func TestIdentityClaimsMustBeCanonical(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, withRoutes(echoRoute(up)))
	for name, extra := range map[string]map[string]any{
		"sub with a leading space":     {"sub": " alice"},
		"tenant with a trailing space": {"tenant_id": "acme "},
		"sub a boolean":                {"sub": true},
	} {
		t.Run(name, func(t *testing.T) {
			if got := g.status(t, "/ws/echo", bearer(wstest.Token(t, "alice", extra))); got != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", got)
			}
		})
	}
	if got := g.status(t, "/ws/echo", bearer(wstest.Token(t, "alice", map[string]any{"sub": 42}))); got != 101 {
		t.Fatalf("numeric sub: %d, want 101", got)
	}
	if r := up.LastRequest(t); r.Header.Get("X-User-Id") != "42" {
		t.Errorf("X-User-Id %q", r.Header.Get("X-User-Id"))
	}
}

// Issue 11, findings 1-3: route configs that passed validation and then
// panicked or misbehaved are refused by Validate, naming the key and no
// source file.
func TestRouteConfigsValidateAsTheyRun(t *testing.T) {
	cases := map[string]struct {
		route proxy.Route
		want  string // "" : valid
	}{
		"catch-all":                 {proxy.Route{Path: "/", Upstream: "ws://127.0.0.1:9/x"}, ""},
		"tail parameter":            {proxy.Route{Path: "/ws/{rest...}", Upstream: "ws://127.0.0.1:9/up/{rest}"}, ""},
		"tail not last":             {proxy.Route{Path: "/ws/{rest...}/x", Upstream: "ws://127.0.0.1:9/x"}, "routes[0].path: tail parameter"},
		"the ForwardAuth path":      {proxy.Route{Path: "/auth/verify", Upstream: "ws://127.0.0.1:9/x"}, "routes[0].path: takes /auth/verify"},
		"a wildcard over it":        {proxy.Route{Path: "/auth/{x}", Upstream: "ws://127.0.0.1:9/x"}, "routes[0].path: takes /auth/verify"},
		"parameter in the host":     {proxy.Route{Path: "/ws/{host}", Upstream: "ws://{host}/x"}, "routes[0].upstream: placeholders may only be used in the path"},
		"parameter in the port":     {proxy.Route{Path: "/ws/{p}", Upstream: "ws://127.0.0.1:{p}/x"}, "routes[0].upstream: placeholders may only be used in the path"},
		"parameter in the scheme":   {proxy.Route{Path: "/ws/{s}", Upstream: "{s}://127.0.0.1/x"}, "routes[0].upstream:"},
		"userinfo":                  {proxy.Route{Path: "/ws/a", Upstream: "ws://user:pw@127.0.0.1:9/x"}, "routes[0].upstream: must not carry userinfo"},
		"port 99999":                {proxy.Route{Path: "/ws/a", Upstream: "ws://127.0.0.1:99999/x"}, "routes[0].upstream: port 99999 is not between 1 and 65535"},
		"port 0":                    {proxy.Route{Path: "/ws/a", Upstream: "ws://127.0.0.1:0/x"}, "routes[0].upstream: port 0"},
		"parameter in path is fine": {proxy.Route{Path: "/ws/{id}", Upstream: "ws://127.0.0.1:9/r/{id}"}, ""},
		"percent in a route path":   {proxy.Route{Path: "/ws/%41", Upstream: "ws://127.0.0.1:9/x"}, "routes[0].path: must be a plain path"},
		"unclean route path":        {proxy.Route{Path: "/ws/../x", Upstream: "ws://127.0.0.1:9/x"}, "routes[0].path: must be a clean path"},
	}
	v, err := auth.New(auth.Config{HMACSecret: []byte(wstest.Secret)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := proxy.Config{Routes: []proxy.Route{tc.route}}
			verr := cfg.Validate()
			h, nerr := proxy.New(cfg, v, nil, nil, nil)
			if (verr == nil) != (nerr == nil) {
				t.Fatalf("Validate says %v, New says %v", verr, nerr)
			}
			if tc.want == "" {
				if verr != nil || h == nil {
					t.Fatalf("refused: %v", verr)
				}
				return
			}
			if verr == nil || !strings.Contains(verr.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", verr, tc.want)
			}
			if strings.Contains(verr.Error(), ".go:") {
				t.Errorf("error names a source file: %v", verr)
			}
		})
	}
	// Two routes that net/http considers the same pattern.
	err = proxy.Config{Routes: []proxy.Route{
		{Path: "/ws/{a}", Upstream: "ws://127.0.0.1:9/x"}, {Path: "/ws/{b}", Upstream: "ws://127.0.0.1:9/y"},
	}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "routes[1].path:") || strings.Contains(err.Error(), ".go:") {
		t.Fatalf("conflicting routes: %v", err)
	}
}

// Issue 11, finding 5: gorilla's chat example (pong wait 60s, ping every
// 54s) was refused.
func TestHeartbeatTimeoutMayExceedInterval(t *testing.T) {
	if err := (proxy.Config{HeartbeatInterval: 54 * time.Second, HeartbeatTimeout: 60 * time.Second,
		Routes: []proxy.Route{{Path: "/ws", Upstream: "ws://127.0.0.1:9/x"}}}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := (proxy.Config{DialTimeout: time.Nanosecond, Routes: []proxy.Route{{Path: "/ws", Upstream: "ws://127.0.0.1:9/x"}}}).Validate()
	if err == nil || !strings.Contains(err.Error(), "dial_timeout: 1ns is too short") {
		t.Fatalf("1ns dial_timeout: %v", err)
	}
}

// A heartbeat whose timeout exceeds its interval runs: live peers stay
// connected across many rounds (TestHeartbeatClosesSilentPeers covers the
// silent ones).
func TestHeartbeatWithTimeoutOverIntervalRuns(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Serve = wstest.Echo
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.HeartbeatInterval = 100 * time.Millisecond
		o.proxy.HeartbeatTimeout = 300 * time.Millisecond
	})
	c := g.dial(t, "/ws/echo?token="+wstest.Token(t, "alice", nil), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ { // about ten heartbeat rounds, the client reading (and so answering pings)
		c.Write(ctx, websocket.MessageText, []byte("x"))
		if got := readText(t, c); got != "x" {
			t.Fatalf("round %d: echo %q", i, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Close(websocket.StatusNormalClosure, "")
}
