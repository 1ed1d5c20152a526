package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
)

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Issue 12, finding 2: 15 clients resuming a 1,000 x 16 KiB history and
// never reading grew wsgate from 26 MB to about 600 MB. Replay now reads
// history a page at a time while the client drains: the bound asserted here
// is 48 MiB of growth for all 15 (before: about 32 MiB per client).
func TestNonReadingResumersKeepRSSBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process and fills 16 MiB of history")
	}
	listen, admin := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
write_timeout: 30s
limits: {handshakes_per_second_per_user: -1, handshakes_per_second_per_ip: -1}
routes:
  - path: "/ws/d/{session}"
    subscribe: ["d:{session}"]
    history: {size: 1000, ttl: 10m, max_message_bytes: 20000, max_replay_bytes: 33554432}
`, listen, admin, wstest.Secret))
	p := start(t, "serve", "--config", cfg)
	wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })
	tok := wstest.Token(t, "alice", nil)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reader, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/d/s1?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.CloseNow()
	reader.SetReadLimit(1 << 20)
	payload := `"` + strings.Repeat("t", 16<<10) + `"`
	for i := 0; i < 1000; i++ {
		resp, err := http.Post("http://"+admin+"/publish?channel=d:s1", "application/json", strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("publish %d: %d", i, resp.StatusCode)
		}
	}
	_, first, err := reader.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Pos string }
	if err := json.Unmarshal(first, &env); err != nil || env.Pos == "" {
		t.Fatalf("first envelope: %s", first[:min(len(first), 120)])
	}
	reader.CloseNow()
	time.Sleep(500 * time.Millisecond)
	before := rssKiB(t, p.cmd.Process.Pid)

	var conns []net.Conn
	for i := 0; i < 15; i++ {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// A small receive buffer, as a client that stopped reading has.
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /ws/d/s1?since=%s&token=%s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", url.QueryEscape(env.Pos), tok)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, " 101 ") {
			t.Fatalf("resumer %d: %q %v", i, line, err)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	peak := before
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, rssKiB(t, p.cmd.Process.Pid))
	}
	growth := peak - before
	t.Logf("RSS %d KiB before 15 non-reading resumers, peak %d KiB (+%d KiB)", before, peak, growth)
	if growth > 48<<10 {
		t.Fatalf("15 non-reading resumers grew RSS by %d KiB, over the 48 MiB bound", growth)
	}
}
