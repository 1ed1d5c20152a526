package proxy_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// withTickets serves /auth/ticket next to the routes, with tickets in store.
func withTickets(cfg auth.TicketConfig, store auth.TicketStore) func(*gatewayOpts) {
	return func(o *gatewayOpts) {
		o.serve = func(h *proxy.Handler) http.Handler {
			t, err := auth.NewTickets(cfg, store)
			if err != nil {
				panic(err)
			}
			h.UseTickets(t)
			mux := http.NewServeMux()
			mux.Handle("/", h)
			mux.Handle("/auth/ticket", h.TicketHandler())
			return mux
		}
	}
}

type ticketReply struct {
	status    int
	header    http.Header
	body      string
	Ticket    string `json:"ticket"`
	ExpiresIn int    `json:"expires_in"`
}

// postTicket calls POST /auth/ticket with hdr.
func postTicket(t *testing.T, g *gateway, method, query string, hdr http.Header) ticketReply {
	t.Helper()
	req, err := http.NewRequest(method, g.URL+"/auth/ticket"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := g.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := ticketReply{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("ticket body %q: %v", b, err)
		}
	}
	return r
}

func ticketFor(t *testing.T, g *gateway, tok string) string {
	t.Helper()
	r := postTicket(t, g, http.MethodPost, "", http.Header{"Authorization": {"Bearer " + tok}})
	if r.status != http.StatusOK || len(r.Ticket) != 43 {
		t.Fatalf("POST /auth/ticket: %d %q", r.status, r.body)
	}
	return r.Ticket
}

func TestTicketConnectsOnceWithTheTokensHeaders(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		withRoutes(echoRoute(up))(o)
		withTickets(auth.TicketConfig{}, auth.NewMemoryTickets(0))(o)
	})
	tok := wstest.Token(t, "alice", nil)
	r := postTicket(t, g, http.MethodPost, "", http.Header{"Authorization": {"Bearer " + tok}})
	if r.status != http.StatusOK || r.ExpiresIn != 30 || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("POST /auth/ticket: %d expires_in=%d cache-control=%q %q", r.status, r.ExpiresIn, r.header.Get("Cache-Control"), r.body)
	}
	c := g.dial(t, "/ws/echo?ticket="+r.Ticket+"&room=7", nil)
	req := up.LastRequest(t)
	if got := req.Header.Get("Authorization"); got != "Bearer "+tok {
		t.Errorf("upstream Authorization = %q, want the JWT the ticket stands for", got)
	}
	if req.Header.Get("X-User-Id") != "alice" || req.Header.Get("X-Tenant-Id") != "t1" {
		t.Errorf("upstream identity headers: %v", req.Header)
	}
	if req.URL.RawQuery != "room=7" {
		t.Errorf("upstream query = %q, want room=7 (the ticket stripped)", req.URL.RawQuery)
	}
	if err := c.Write(context.Background(), websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := readText(t, c); got != "hi" {
		t.Fatalf("echo = %q", got)
	}
	// Spent: the same ticket again is refused before any upgrade.
	if got := g.status(t, "/ws/echo?ticket="+r.Ticket, nil); got != http.StatusUnauthorized {
		t.Errorf("replayed ticket: status %d, want 401", got)
	}
	if got := g.metric(t, "wsgate_handshakes_total", "route", "/auth/ticket", "result", "ok"); got != 1 {
		t.Errorf("ticket requests counted ok: %v, want 1", got)
	}
	if strings.Contains(g.logs.String(), r.Ticket) {
		t.Errorf("a ticket reached the logs:\n%s", g.logs.String())
	}
}

func TestTicketRefusals(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		withRoutes(echoRoute(up))(o)
		o.proxy.AllowedOrigins = []string{"https://app.example.com"}
		withTickets(auth.TicketConfig{TTL: time.Second}, auth.NewMemoryTickets(0))(o)
	})
	tok := wstest.Token(t, "alice", nil)
	bearerHdr := http.Header{"Authorization": {"Bearer " + tok}}

	t.Run("expired ticket", func(t *testing.T) {
		ticket := ticketFor(t, g, tok)
		time.Sleep(1100 * time.Millisecond)
		if got := g.status(t, "/ws/echo?ticket="+ticket, nil); got != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", got)
		}
	})
	t.Run("foreign ticket", func(t *testing.T) {
		other := newGateway(t, func(o *gatewayOpts) {
			withRoutes(echoRoute(up))(o)
			withTickets(auth.TicketConfig{}, auth.NewMemoryTickets(0))(o)
		})
		ticket := ticketFor(t, other, tok)
		if got := g.status(t, "/ws/echo?ticket="+ticket, nil); got != http.StatusUnauthorized {
			t.Errorf("status %d, want 401", got)
		}
	})
	for name, q := range map[string]string{
		"made-up ticket":   "?ticket=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"short ticket":     "?ticket=abc",
		"empty ticket":     "?ticket=",
		"two tickets":      "?ticket=a&ticket=b",
		"ticket and token": "?ticket=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&token=" + tok,
	} {
		t.Run(name, func(t *testing.T) {
			if got := g.status(t, "/ws/echo"+q, nil); got != http.StatusUnauthorized {
				t.Errorf("status %d, want 401", got)
			}
		})
	}
	t.Run("ticket lives no longer than the token", func(t *testing.T) {
		short := wstest.Token(t, "alice", map[string]any{"exp": time.Now().Add(2500 * time.Millisecond).Unix()})
		r := postTicket(t, g, http.MethodPost, "", http.Header{"Authorization": {"Bearer " + short}})
		if r.status != http.StatusOK || r.ExpiresIn > 2 {
			t.Errorf("status %d, expires_in %d, want at most 2 (the token's exp)", r.status, r.ExpiresIn)
		}
	})
	cases := map[string]struct {
		method, query string
		hdr           http.Header
		status        int
	}{
		"no token":              {http.MethodPost, "", http.Header{}, http.StatusUnauthorized},
		"bad token":             {http.MethodPost, "", http.Header{"Authorization": {"Bearer x.y.z"}}, http.StatusUnauthorized},
		"expired token":         {http.MethodPost, "", http.Header{"Authorization": {"Bearer " + wstest.Token(t, "a", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})}}, http.StatusUnauthorized},
		"token in the query":    {http.MethodPost, "?token=" + tok, http.Header{}, http.StatusBadRequest},
		"GET":                   {http.MethodGet, "", bearerHdr, http.StatusMethodNotAllowed},
		"foreign origin":        {http.MethodPost, "", http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://evil.example.org"}}, http.StatusForbidden},
		"allowed origin":        {http.MethodPost, "", http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://app.example.com"}}, http.StatusOK},
		"preflight":             {http.MethodOptions, "", http.Header{"Origin": {"https://app.example.com"}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization"}}, http.StatusNoContent},
		"preflight from a foe":  {http.MethodOptions, "", http.Header{"Origin": {"https://evil.example.org"}, "Access-Control-Request-Method": {"POST"}}, http.StatusForbidden},
		"no origin (not a tab)": {http.MethodPost, "", bearerHdr, http.StatusOK},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := postTicket(t, g, tc.method, tc.query, tc.hdr)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %q", r.status, tc.status, r.body)
			}
			if strings.Contains(r.body, tok) {
				t.Errorf("the body echoes the token: %q", r.body)
			}
			origin := tc.hdr.Get("Origin")
			allowed := r.header.Get("Access-Control-Allow-Origin")
			switch {
			case tc.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "":
				t.Error("401 without WWW-Authenticate")
			case origin == "https://app.example.com" && (allowed != origin || r.header.Get("Access-Control-Allow-Credentials") != "true"):
				t.Errorf("allowed origin got CORS headers %v", r.header)
			case origin != "https://app.example.com" && allowed != "":
				t.Errorf("Access-Control-Allow-Origin %q for origin %q", allowed, origin)
			case tc.method == http.MethodOptions && tc.status == http.StatusNoContent &&
				(r.header.Get("Access-Control-Allow-Methods") != "POST" || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization")):
				t.Errorf("preflight headers %v", r.header)
			}
		})
	}
}

// Issuing a ticket spends the user's handshake budget, as a handshake does.
func TestTicketIssuanceCountsAgainstTheUserRate(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		withRoutes(echoRoute(up))(o)
		o.proxy.Limits.HandshakesPerSecondPerUser = 1 // a burst of 2
		withTickets(auth.TicketConfig{}, auth.NewMemoryTickets(0))(o)
	})
	hdr := http.Header{"Authorization": {"Bearer " + wstest.Token(t, "alice", nil)}}
	var got []int
	for range 3 {
		got = append(got, postTicket(t, g, http.MethodPost, "", hdr).status)
	}
	if got[0] != 200 || got[1] != 200 || got[2] != http.StatusTooManyRequests {
		t.Errorf("statuses %v, want [200 200 429]", got)
	}
}

// A ticket issued by one replica is redeemed by another through Redis,
// once.
func TestTicketRedeemedOnAnotherReplicaThroughRedis(t *testing.T) {
	rd := wstest.StartRedis(t)
	up := wstest.NewUpstream(t)
	replica := func() *gateway {
		store, err := auth.NewRedisTickets(rd.URL())
		if err != nil {
			t.Fatal(err)
		}
		wstest.Run(t, store.Run)
		wstest.WaitFor(t, "ticket store connected", store.Ready)
		return newGateway(t, func(o *gatewayOpts) {
			withRoutes(echoRoute(up))(o)
			withTickets(auth.TicketConfig{}, store)(o)
		})
	}
	a, b := replica(), replica()
	tok := wstest.Token(t, "bob", nil)
	ticket := ticketFor(t, a, tok)
	if n, _ := rd.Do("DBSIZE"); n != "1" {
		t.Errorf("redis holds %s keys, want 1 ticket", n)
	}
	c := b.dial(t, "/ws/echo?ticket="+ticket, nil)
	if got := up.LastRequest(t).Header.Get("Authorization"); got != "Bearer "+tok {
		t.Errorf("upstream Authorization via replica b = %q", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if got := a.status(t, "/ws/echo?ticket="+ticket, nil); got != http.StatusUnauthorized {
		t.Errorf("replay on replica a: status %d, want 401", got)
	}
	if n, _ := rd.Do("DBSIZE"); n != "0" {
		t.Errorf("redis holds %s keys after redemption, want 0", n)
	}
	// Redis' own expiry ends an unused ticket.
	ticket = ticketFor(t, a, tok)
	if ttl, _ := rd.Do("PTTL", "wsgate:ticket:"+hashTicket(ticket)); ttl == "-1" || ttl == "-2" {
		t.Errorf("ticket key PTTL %s, want a positive expiry", ttl)
	}
}

func hashTicket(ticket string) string {
	h := sha256.Sum256([]byte(ticket))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// The configured cookie buys a ticket as the header does (a page whose
// session cookie is the JWT).
func TestTicketFromTheCookie(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		withRoutes(echoRoute(up))(o)
		o.auth.Cookie = "session"
		withTickets(auth.TicketConfig{}, auth.NewMemoryTickets(0))(o)
	})
	tok := wstest.Token(t, "dora", nil)
	r := postTicket(t, g, http.MethodPost, "", http.Header{"Cookie": {"session=" + tok}})
	if r.status != http.StatusOK {
		t.Fatalf("POST /auth/ticket with the cookie: %d %q", r.status, r.body)
	}
	g.dial(t, "/ws/echo?ticket="+r.Ticket, nil).CloseNow()
	if got := up.LastRequest(t).Header.Get("Authorization"); got != "Bearer "+tok {
		t.Errorf("upstream Authorization = %q", got)
	}
}
