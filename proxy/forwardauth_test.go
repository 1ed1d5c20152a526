package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/wstest"
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
