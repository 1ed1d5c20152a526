package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
)

func TestValidateTicketAndAssertionKeys(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key.pem")
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	code, _, errs := runCLI("validate", "--config", writeConfig(t, fmt.Sprintf(`
auth: {hmac_secret: %q, ticket_param: token, ticket_ttl: 10m, first_message_timeout: -1s}
limits: {max_pending_auth: -5}
assertion: {key_file: "file:%s"}
routes: [{path: /a, upstream: "ws://127.0.0.1:1", auth: first_messages}]
`, wstest.Secret, key)))
	for _, want := range []string{
		"config: auth.ticket_param: must be set and differ from auth.query_param",
		"config: auth.ticket_ttl: must be between 0 and 5m0s",
		"config: auth.first_message_timeout: must be positive",
		"config: limits.max_pending_auth: must be positive, or -1 to disable",
		"config: assertion.key_file: EC key is not on P-256 (ES256)",
		`config: routes[0].auth: must be empty or "first_message"`,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("missing %q in:\n%s", want, errs)
		}
	}
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
}

// Two real wsgate processes sharing one redis-server and one assertion
// key: a ticket bought from one is spent on the other, once; the upstream
// verifies the assertion against the JWKS either admin listener publishes;
// a first-message route works through the process; no token or ticket is
// ever in their logs.
func TestTicketsAcrossProcessesWithAssertions(t *testing.T) {
	rd := wstest.StartRedis(t)
	keyPath := filepath.Join(t.TempDir(), "assertion.pem")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(k)
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	up := wstest.NewUpstream(t)
	type replica struct {
		listen, admin string
		p             *process
	}
	var reps []replica
	for range 2 {
		r := replica{listen: freeAddr(t), admin: freeAddr(t)}
		r.p = start(t, "serve", "--config", writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
redis: {url: %q}
assertion: {key_file: "file:%s"}
routes:
  - {path: /ws/echo, upstream: "%s/echo"}
  - {path: /ws/fm, upstream: "%s/fm", auth: first_message}
`, r.listen, r.admin, wstest.Secret, rd.URL(), keyPath, up.WSURL(), up.WSURL())))
		wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+r.admin+"/readyz") == 200 })
		reps = append(reps, r)
	}
	a, b := reps[0], reps[1]
	tok := wstest.Token(t, "carol", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	req, _ := http.NewRequest(http.MethodPost, "http://"+a.listen+"/auth/ticket", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var issued struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	json.NewDecoder(resp.Body).Decode(&issued)
	resp.Body.Close()
	if resp.StatusCode != 200 || issued.Ticket == "" || issued.ExpiresIn != 30 {
		t.Fatalf("POST /auth/ticket on a: %d %+v", resp.StatusCode, issued)
	}
	c, _, err := websocket.Dial(ctx, "ws://"+b.listen+"/ws/echo?ticket="+issued.Ticket, nil)
	if err != nil {
		t.Fatalf("ticket from a on b: %v", err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if _, resp, err := websocket.Dial(ctx, "ws://"+a.listen+"/ws/echo?ticket="+issued.Ticket, nil); err == nil || resp.StatusCode != 401 {
		t.Errorf("replay on a: %v, want 401", err)
	}
	upReq := up.LastRequest(t)
	if upReq.Header.Get("Authorization") != "Bearer "+tok || strings.Contains(upReq.URL.RawQuery, "ticket") {
		t.Errorf("upstream request: %v %q", upReq.Header, upReq.URL.RawQuery)
	}

	// Both admin listeners publish the same key; the assertion verifies.
	var jwksA, jwksB []byte
	for _, r := range []struct {
		admin string
		out   *[]byte
	}{{a.admin, &jwksA}, {b.admin, &jwksB}} {
		resp, err := http.Get("http://" + r.admin + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		*r.out, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
			t.Errorf("jwks: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if string(jwksA) != string(jwksB) {
		t.Errorf("replicas publish different key sets:\n%s\n%s", jwksA, jwksB)
	}
	set, err := jwk.Parse(jwksA)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify([]byte(upReq.Header.Get(auth.AssertionHeader)), jws.WithKeySet(set, jws.WithRequireKid(true)))
	if err != nil {
		t.Fatalf("assertion does not verify against the JWKS: %v", err)
	}
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	if claims["iss"] != "wsgate" || claims["sub"] != "carol" || claims["aud"] != "ws://"+up.Listener.Addr().String() ||
		claims["jti"] != upReq.Header.Get("X-Request-Id") {
		t.Errorf("assertion claims %v", claims)
	}

	// First-message auth through the process.
	fm, _, err := websocket.Dial(ctx, "ws://"+b.listen+"/ws/fm", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fm.CloseNow()
	msg, _ := json.Marshal(map[string]string{"type": "auth", "token": tok})
	fm.Write(ctx, websocket.MessageText, msg)
	if _, ack, err := fm.Read(ctx); err != nil || string(ack) != `{"type":"wsgate.auth","ok":true,"user":"carol","tenant":"t1"}` {
		t.Fatalf("ack %q %v", ack, err)
	}
	fm.Write(ctx, websocket.MessageText, []byte("ping"))
	if _, b, err := fm.Read(ctx); err != nil || string(b) != "ping" {
		t.Fatalf("echo %q %v", b, err)
	}
	fm.Close(websocket.StatusNormalClosure, "")

	time.Sleep(100 * time.Millisecond)
	for _, r := range reps {
		logs := r.p.stderr.String()
		if strings.Contains(logs, "eyJ") || strings.Contains(logs, issued.Ticket) {
			t.Errorf("a token or ticket reached the logs:\n%s", logs)
		}
	}
}
