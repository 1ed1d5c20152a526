package proxy_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

// histogram returns the buckets (upper bound → cumulative count), count and sum of one
// series of a histogram.
func histogram(t *testing.T, g *gateway, name string, labels ...string) (map[float64]uint64, uint64, float64) {
	t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			b := map[float64]uint64{}
			for _, bk := range m.GetHistogram().GetBucket() {
				b[bk.GetUpperBound()] = bk.GetCumulativeCount()
			}
			return b, m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil, 0, 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

// TestObservabilityMetrics: message sizes per direction (live, then after the session ended,
// with no double count), the session duration, connection slots against their caps, and the
// drain gauges.
func TestObservabilityMetrics(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{echoRoute(up)}
		o.proxy.Limits.MaxConnectionsPerTenant = -1
		o.proxy.ShutdownGrace = 3 * time.Second
	})
	c := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "alice", nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range []int{10, 2000, 70000} {
		msg := bytes.Repeat([]byte("m"), n)
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.Read(ctx); err != nil || len(got) != n {
			t.Fatalf("echo %d: %d %v", n, len(got), err)
		}
	}
	checkSizes := func(when string) {
		t.Helper()
		for _, dir := range []string{"client_to_upstream", "upstream_to_client"} {
			b, count, sum := histogram(t, g, "wsgate_message_size_bytes", "route", "/ws/echo", "direction", dir)
			if count != 3 || sum != 72010 || b[64] != 1 || b[1024] != 1 || b[4096] != 2 || b[65536] != 2 || b[262144] != 3 {
				t.Errorf("%s: %s sizes count %d sum %v buckets %v; want 3 messages of 10, 2000 and 70000 bytes", when, dir, count, sum, b)
			}
		}
		if _, count, _ := histogram(t, g, "wsgate_message_size_bytes", "route", "/ws/echo", "direction", "channel_to_client"); count != 0 {
			t.Errorf("%s: channel_to_client counted %d messages on an upstream route", when, count)
		}
	}
	checkSizes("live")
	if got := wstest.Metric(t, g.reg, "wsgate_connection_slots", "scope", "process"); got != 1 {
		t.Errorf("process slots %v, want 1", got)
	}
	if got := wstest.Metric(t, g.reg, "wsgate_connection_slots", "scope", "user"); got != 1 {
		t.Errorf("busiest user's slots %v, want 1", got)
	}
	if got := wstest.Metric(t, g.reg, "wsgate_connection_slots_limit", "scope", "process"); got != proxy.DefaultMaxConnections {
		t.Errorf("process cap %v, want %d", got, proxy.DefaultMaxConnections)
	}
	if got := wstest.Metric(t, g.reg, "wsgate_connection_slots_limit", "scope", "tenant"); got != 0 {
		t.Errorf("disabled tenant cap exported as %v; want no series", got)
	}

	c.Close(websocket.StatusNormalClosure, "")
	wstest.WaitFor(t, "session end", func() bool {
		return wstest.Metric(t, g.reg, "wsgate_session_duration_seconds", "route", "/ws/echo") == 1
	})
	checkSizes("ended")
	if got := wstest.Metric(t, g.reg, "wsgate_connection_slots", "scope", "process"); got != 0 {
		t.Errorf("process slots %v after close, want 0", got)
	}

	if got := wstest.Metric(t, g.reg, "wsgate_draining"); got != 0 {
		t.Errorf("draining %v before Drain", got)
	}
	if got := wstest.Metric(t, g.reg, "wsgate_shutdown_grace_seconds"); got != 3 {
		t.Errorf("shutdown grace %v, want 3", got)
	}
	bob := g.dial(t, "/ws/echo", bearer(wstest.Token(t, "bob", nil))) // open until the drain closes it
	read := make(chan error, 1)
	go func() { _, _, err := bob.Read(ctx); read <- err }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		g.h.Drain(dctx)
	}()
	wstest.WaitFor(t, "draining", func() bool { return wstest.Metric(t, g.reg, "wsgate_draining") == 1 })
	time.Sleep(50 * time.Millisecond)
	if got := wstest.Metric(t, g.reg, "wsgate_drain_elapsed_seconds"); got < 0.05 || got > 3 {
		t.Errorf("drain elapsed %v, want between 0.05 and 3 seconds", got)
	}
	<-done
	if err := <-read; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("drained client read %v, want 1001", err)
	}
}
