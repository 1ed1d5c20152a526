package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

func TestForwardAuthVerify(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, withRoutes(echoRoute(up)))
	srv := httptest.NewServer(g.h.VerifyHandler())
	defer srv.Close()
	tok := wstest.Token(t, "alice", map[string]any{"tenant_id": "acme"})
	expired := wstest.Token(t, "alice", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})

	cases := map[string]struct {
		header     http.Header
		wantStatus int
		wantUser   string
	}{
		"bearer header":            {http.Header{"Authorization": {"Bearer " + tok}}, 200, "alice"},
		"token in forwarded URI":   {http.Header{"X-Forwarded-Uri": {"/ws/chat?x=1&token=" + url.QueryEscape(tok)}}, 200, "alice"},
		"expired in forwarded URI": {http.Header{"X-Forwarded-Uri": {"/ws/chat?token=" + expired}}, 401, ""},
		"no token":                 {http.Header{"X-Forwarded-Uri": {"/ws/chat"}}, 401, ""},
		"spoofed identity header":  {http.Header{"X-User-Id": {"admin"}}, 401, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+"/auth/verify", nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || resp.Header.Get("X-User-Id") != tc.wantUser {
				t.Errorf("status %d user %q, want %d %q", resp.StatusCode, resp.Header.Get("X-User-Id"), tc.wantStatus, tc.wantUser)
			}
			if tc.wantStatus == 200 && resp.Header.Get("X-Tenant-Id") != "acme" {
				t.Errorf("X-Tenant-Id = %q", resp.Header.Get("X-Tenant-Id"))
			}
		})
	}
}

// Issue 12, finding 4: /auth/verify answered any method, and 1,000 forged
// tokens in 0.3s all got 401: a free oracle, uncounted.
func TestForwardAuthIsNoOracle(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.FailedVerificationsPerSecondPerIP = 5 // burst 10
	})
	tok := wstest.Token(t, "alice", nil)
	do := func(method, from, token string) int {
		req, _ := http.NewRequest(method, g.URL+"/auth/verify", nil)
		req.Header.Set("X-Forwarded-For", from) // the gateway in front is loopback: trusted
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		if got := do(m, "198.51.100.1", tok); got != http.StatusMethodNotAllowed {
			t.Errorf("%s with a valid token: %d, want 405", m, got)
		}
	}
	if got := do(http.MethodHead, "198.51.100.1", tok); got != 200 {
		t.Errorf("HEAD: %d", got)
	}
	forged := tok[:len(tok)-4] + "AAAA"
	statuses := map[int]int{}
	for i := 0; i < 100; i++ {
		statuses[do(http.MethodGet, "198.51.100.7", forged)]++
	}
	if statuses[401] > 12 || statuses[429] < 85 {
		t.Fatalf("100 forged tokens from one client: %v; want at most the burst (10, plus refill) as 401, the rest 429", statuses)
	}
	// Another client is unaffected; the flooding one is cut off even with a
	// valid token until its budget refills.
	if got := do(http.MethodGet, "198.51.100.8", tok); got != 200 {
		t.Errorf("a bystander's valid token: %d", got)
	}
	if got := do(http.MethodGet, "198.51.100.7", tok); got != http.StatusTooManyRequests {
		t.Errorf("the flooding client's next check: %d, want 429", got)
	}
	if got := g.metric(t, "wsgate_forward_auth_total", "result", "rate_limited"); got < 85 {
		t.Errorf("rate_limited counted %v", got)
	}
	if got := g.metric(t, "wsgate_forward_auth_total", "result", "unauthorized"); got != float64(statuses[401]) {
		t.Errorf("unauthorized counted %v, want %d", got, statuses[401])
	}
	if got := g.metric(t, "wsgate_forward_auth_total", "result", "bad_method"); got != 3 {
		t.Errorf("bad_method counted %v", got)
	}
}
