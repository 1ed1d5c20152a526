package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/wstest"
)

// Issue 12, finding 5: POST /publish had no authentication, and the admin
// server no read timeout. Finding 4: an idle keep-alive connection on the
// public listener was held indefinitely.
func TestAdminPublishTokenAndTimeouts(t *testing.T) {
	t.Parallel()
	listen, admin := freeAddr(t), freeAddr(t)
	secretFile := filepath.Join(t.TempDir(), "publish-token")
	const publishToken = "admin-publish-token-0123456789"
	os.WriteFile(secretFile, []byte(publishToken+"\n"), 0o600)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
admin: {publish_token: "file:%s"}
limits: {idle_timeout: 1s}
routes:
  - {path: "/ws/n", subscribe: ["n:{user}"]}
`, listen, admin, wstest.Secret, secretFile))
	p := start(t, "serve", "--config", cfg)
	wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })

	publish := func(auth string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/publish?channel=n:alice", strings.NewReader("hi"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for auth, want := range map[string]int{
		"":                                401,
		"Bearer wrong-token-0123456789ab": 401,
		"Basic " + publishToken:           401,
		"Bearer " + publishToken:          204,
	} {
		if got := publish(auth); got != want {
			t.Errorf("publish with %q: %d, want %d", auth, got, want)
		}
	}

	// A public keep-alive connection idle past limits.idle_timeout is closed.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /auth/verify HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle public connection: %v, want EOF", err)
	}
	if idle := time.Since(start); idle > 3*time.Second {
		t.Errorf("idle public connection closed after %s, want about 1s", idle)
	}

	// An admin POST whose body never arrives is cut at the read timeout.
	a, err := net.Dial("tcp", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fmt.Fprintf(a, "POST /publish?channel=n:alice HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n", publishToken)
	start = time.Now()
	a.SetReadDeadline(time.Now().Add(AdminReadTimeout + 10*time.Second))
	io.Copy(io.Discard, a)
	if held := time.Since(start); held > AdminReadTimeout+3*time.Second {
		t.Errorf("a stalled admin body held its connection for %s", held)
	}
	if strings.Contains(p.stderr.String(), publishToken) {
		t.Error("the publish token reached the logs")
	}
}
