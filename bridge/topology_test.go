package bridge_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/wstest"
)

// The hub must work with the Redis topologies the README names, through
// rueidis: Sentinel and Cluster, on real redis-server processes.

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func pubSubRoundTrip(t *testing.T, h *bridge.Hub, channel string) {
	t.Helper()
	ctx := context.Background()
	s, err := h.Subscribe(ctx, []string{channel}, 10)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer s.Close()
	if err := h.Publish(ctx, channel, []byte("via "+channel)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if m := recv(t, s); string(m.Payload) != "via "+channel {
		t.Errorf("got %q", m.Payload)
	}
}

func TestHubThroughSentinel(t *testing.T) {
	master := wstest.StartRedis(t)
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n", port, dir, master.Port)), 0o600)
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })

	h := startHub(t, fmt.Sprintf("redis://127.0.0.1:%d/0?master_set=mymaster", port))
	pubSubRoundTrip(t, h, "ai:stream:sentinel")
}

func TestHubThroughCluster(t *testing.T) {
	var nodes []*wstest.Redis
	var addrs []string
	for i := 0; i < 3; i++ {
		n := wstest.StartRedisWith(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		nodes = append(nodes, n)
		addrs = append(addrs, n.Addr)
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	wstest.WaitFor(t, "cluster ok", func() bool {
		for _, n := range nodes {
			info, _ := n.Do("CLUSTER", "INFO")
			if !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	url := "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
	h, err := bridge.New(bridge.Config{URL: url, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
		Durable: []bridge.Durable{{Pattern: "ai:durable:*"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wstest.Run(t, h.Run)
	wstest.WaitFor(t, "hub ready", h.Ready)
	ctx := context.Background()

	for _, ch := range []string{"ai:stream:a", "notifications:t1:u1", "collab:t2:doc9"} {
		pubSubRoundTrip(t, h, ch)
	}
	// Durable history: the script's keys share one slot through the {channel} tag.
	s, err := h.Subscribe(ctx, []string{"ai:durable:s1"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := h.Publish(ctx, "ai:durable:s1", []byte(`{"i":1}`)); err != nil {
		t.Fatalf("durable publish on a cluster: %v", err)
	}
	m := recv(t, s)
	if m.Pos.Epoch == "" || string(m.Payload) != `{"i":1}` {
		t.Fatalf("durable message %+v", m)
	}
	cur, rec, err := h.Replay(ctx, "ai:durable:s1", m.Pos.Epoch+":0-0")
	if err != nil || !rec.Recovered || rec.Replayed != 1 {
		t.Fatalf("replay on a cluster: %v %+v", err, rec)
	}
	if msgs := drain(t, cur); len(msgs) != 1 || string(msgs[0].Payload) != `{"i":1}` {
		t.Errorf("replayed on a cluster: %v", msgs)
	}
}
