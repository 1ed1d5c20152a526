package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSoakShort is the soak in CI size: 300 connections for 15s through a
// real wsgate process, with tokens short enough that most connections see a
// 4001 and reconnect. (wsgate is built without -race: the race detector's
// memory would hide the RSS check; -race runs of wssoak do the opposite.)
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	o := defaultOptions()
	o.Duration = 15 * time.Second
	o.Conns = 300
	o.TTLMin, o.TTLMax = 4*time.Second, 9*time.Second
	o.Settle = 60 * time.Second
	var progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := soak(ctx, o, &progress)
	if err != nil {
		t.Fatalf("soak did not run: %v\n%s", err, progress.String())
	}
	var out strings.Builder
	rep.print(&out)
	t.Log("\n" + out.String())
	for _, f := range rep.Failures {
		t.Error(f)
	}
	// The run must have exercised what it claims to.
	if n := rep.Expiries.Load(); n < int64(o.Conns)/2 {
		t.Errorf("only %d token-expiry closes; with TTLs of %s-%s over %s, expected at least %d", n, o.TTLMin, o.TTLMax, o.Duration, o.Conns/2)
	}
	if rep.Churned.Load() == 0 {
		t.Error("no churn reconnects")
	}
	if sent, echoed := rep.Sent.Load(), rep.Echoed.Load(); echoed < int64(o.Conns)*10 || echoed > sent {
		t.Errorf("sent %d, echoed %d: expected about %d echoes", sent, echoed, int64(o.Conns)*int64(o.Duration/o.Interval))
	}
	if rep.Peak.Active < o.Conns*9/10 {
		t.Errorf("peak active %d, want about %d", rep.Peak.Active, o.Conns)
	}
}
