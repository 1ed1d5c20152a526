package proxy_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

func TestUpstreamSeesHeaderAuthOnly(t *testing.T) {
	up := wstest.NewUpstream(t)
	up.Subprotocols = []string{"chat.v1"}
	g := newGateway(t, withRoutes(proxy.Route{Path: "/ws/bi/dashboards/{id}", Upstream: up.WSURL() + "/ws/dashboards/{id}"}))
	tok := wstest.Token(t, "alice", nil)

	c := g.dial(t, "/ws/bi/dashboards/d%2042?a=1&token="+tok+"&b=two", &websocket.DialOptions{
		HTTPHeader: http.Header{
			"X-User-Id":       {"admin"},
			"X-Tenant-Id":     {"other-tenant"},
			"X-Request-Id":    {"req-123"},
			"X-Forwarded-For": {"203.0.113.7"},
		},
		Subprotocols: []string{"chat.v1", auth.DefaultSubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte("junk"))},
	})
	if got := c.Subprotocol(); got != "chat.v1" {
		t.Errorf("client subprotocol = %q, want the upstream's pick chat.v1", got)
	}
	r := up.LastRequest(t)
	want := map[string]string{
		"Authorization":          "Bearer " + tok,
		"X-User-Id":              "alice",
		"X-Tenant-Id":            "t1",
		"X-Request-Id":           "req-123",
		"X-Forwarded-For":        "203.0.113.7, 127.0.0.1",
		"X-Forwarded-Proto":      "http",
		"Sec-Websocket-Protocol": "chat.v1",
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if n := len(r.Header.Values("X-User-Id")); n != 1 {
		t.Errorf("upstream got %d X-User-Id headers, want 1", n)
	}
	if r.URL.Path != "/ws/dashboards/d 42" || r.URL.RawPath != "" && r.URL.RawPath != "/ws/dashboards/d%2042" {
		t.Errorf("upstream path = %q (raw %q), want /ws/dashboards/d 42", r.URL.Path, r.URL.RawPath)
	}
	if r.URL.RawQuery != "a=1&b=two" {
		t.Errorf("upstream query = %q, want a=1&b=two (token stripped)", r.URL.RawQuery)
	}
	if strings.Contains(r.URL.String(), tok) || strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), "bearer") {
		t.Error("the token reached the upstream URL or subprotocols")
	}
	// Round trip through the upstream echo.
	if err := c.Write(context.Background(), websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != "hi" {
		t.Errorf("echo = %q", got)
	}
}

func TestClientAuthorizationNeverForwarded(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, withRoutes(echoRoute(up)))
	tok := wstest.Token(t, "alice", nil)
	// A client bearer token is verified and re-sent, never passed as-is
	// alongside another: a forged second Authorization is refused.
	if got := g.status(t, "/ws/echo?token="+tok, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Basic YWRtaW46YWRtaW4="}}}); got != http.StatusUnauthorized {
		t.Errorf("Basic Authorization next to a query token: status %d, want 401", got)
	}
	if len(up.Requests()) != 0 {
		t.Error("upstream was dialled for a refused handshake")
	}
}

func TestTokenSources(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.auth.Cookie = "wsgate_token"
	})
	tok := wstest.Token(t, "alice", nil)
	sub := auth.DefaultSubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))
	cases := map[string]struct {
		path string
		opts *websocket.DialOptions
		want int
	}{
		"bearer header":                {"/ws/echo", bearer(tok), 101},
		"query":                        {"/ws/echo?token=" + tok, nil, 101},
		"subprotocol":                  {"/ws/echo", &websocket.DialOptions{Subprotocols: []string{sub}}, 101},
		"cookie":                       {"/ws/echo", &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"wsgate_token=" + tok}}}, 101},
		"header wins over a bad query": {"/ws/echo?token=bad", bearer(tok), 101},
		"bad subprotocol base64":       {"/ws/echo", &websocket.DialOptions{Subprotocols: []string{auth.DefaultSubprotocolPrefix + "!!"}}, 401},
		"two query tokens":             {"/ws/echo?token=" + tok + "&token=" + tok, nil, 401},
		"none":                         {"/ws/echo", nil, 401},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := g.status(t, tc.path, tc.opts); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
	// The subprotocol token is consumed, not echoed, and not forwarded.
	for _, r := range up.Requests() {
		if strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), auth.DefaultSubprotocolPrefix) {
			t.Error("the subprotocol token entry reached the upstream")
		}
	}
}

func TestHandshakeFailuresAnswerBeforeUpgrade(t *testing.T) {
	up := wstest.NewUpstream(t)
	rejecting := wstest.NewUpstream(t)
	rejecting.Reject = http.StatusForbidden
	failing := wstest.NewUpstream(t)
	failing.Reject = http.StatusInternalServerError

	// A port with nothing listening.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := l.Addr().String()
	l.Close()
	// A listener that accepts TCP and never answers the handshake.
	silent, _ := silentListener(t)

	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.DialTimeout = 300 * time.Millisecond
		o.proxy.AllowedOrigins = []string{"https://app.example.com", "https://*.dash.example.com"}
		o.proxy.Routes = []proxy.Route{
			echoRoute(up),
			{Path: "/ws/dead", Upstream: "ws://" + deadAddr + "/"},
			{Path: "/ws/silent", Upstream: "ws://" + silent + "/"},
			{Path: "/ws/rejecting", Upstream: rejecting.WSURL() + "/"},
			{Path: "/ws/failing", Upstream: failing.WSURL() + "/"},
			{Path: "/ws/sessions/{session}", Upstream: up.WSURL() + "/s/{session}", Require: map[string]string{"session": "sid"}},
		}
	})
	tok := wstest.Token(t, "alice", map[string]any{"sid": []string{"s1", "s2"}})
	expired := wstest.Token(t, "alice", map[string]any{"exp": time.Now().Add(-time.Minute).Unix()})
	origin := func(o string) *websocket.DialOptions {
		return &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {o}, "Authorization": {"Bearer " + tok}}}
	}
	cases := map[string]struct {
		path string
		opts *websocket.DialOptions
		want int
	}{
		"no route":              {"/ws/nope", bearer(tok), 404},
		"route prefix only":     {"/ws/echo/extra", bearer(tok), 404},
		"origin not allowed":    {"/ws/echo", origin("https://evil.example.com"), 403},
		"origin exact":          {"/ws/echo", origin("https://app.example.com"), 101},
		"origin wildcard":       {"/ws/echo", origin("https://eu.dash.example.com"), 101},
		"origin wildcard bare":  {"/ws/echo", origin("https://dash.example.com"), 403},
		"origin scheme differs": {"/ws/echo", origin("http://app.example.com"), 403},
		"missing token":         {"/ws/echo", nil, 401},
		"garbage token":         {"/ws/echo?token=abc.def.ghi", nil, 401},
		"expired token":         {"/ws/echo", bearer(expired), 401},
		"upstream unreachable":  {"/ws/dead", bearer(tok), 502},
		"upstream silent":       {"/ws/silent", bearer(tok), 504},
		"upstream refuses 403":  {"/ws/rejecting", bearer(tok), 403},
		"upstream fails 500":    {"/ws/failing", bearer(tok), 502},
		"session in sid claim":  {"/ws/sessions/s2", bearer(tok), 101},
		"session not in claim":  {"/ws/sessions/s3", bearer(tok), 403},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			if got := g.status(t, tc.path, tc.opts); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
			if tc.want == 504 && time.Since(start) > 3*time.Second {
				t.Errorf("504 took %v, want about the 300ms dial timeout", time.Since(start))
			}
		})
	}

	t.Run("plain GET gets 426", func(t *testing.T) {
		req, _ := http.NewRequest("GET", g.URL+"/ws/echo", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 426 || resp.Header.Get("Upgrade") != "websocket" {
			t.Errorf("status %d Upgrade %q, want 426 websocket", resp.StatusCode, resp.Header.Get("Upgrade"))
		}
	})
	t.Run("401 carries WWW-Authenticate and no token", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, g.wsURL("/ws/echo?token="+expired), nil)
		if err == nil || resp == nil {
			t.Fatal("expected a refused handshake")
		}
		if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("WWW-Authenticate = %q", got)
		}
		if strings.Contains(err.Error(), expired) {
			t.Error("the error text carries the token")
		}
	})
	if got := g.metric(t, "wsgate_handshakes_total", "route", "/ws/silent", "result", "upstream_timeout"); got != 1 {
		t.Errorf("upstream_timeout handshakes = %v, want 1", got)
	}
	if got := g.metric(t, "wsgate_handshakes_total", "route", "/ws/echo", "result", "unauthorized"); got < 3 {
		t.Errorf("unauthorized handshakes = %v, want >= 3", got)
	}
}
