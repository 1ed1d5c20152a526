// Command wssoak is wsgate's soak test: it builds and starts a real
// `wsgate serve` on loopback, holds many WebSocket connections through it to
// an in-process echo upstream with steady traffic, reconnect churn and
// short-lived tokens, then closes everything and checks that wsgate's
// goroutines and RSS return to their pre-load baseline. It exits non-zero on
// any echo mismatch, unexpected close, or leak.
//
//	go run ./cmd/wssoak                         # make soak: 2m, 2,000 connections
//	go run ./cmd/wssoak -duration 30s -conns 500 -ttl-min 5s -ttl-max 15s
//
// Everything runs on 127.0.0.1. Linux only (RSS comes from /proc).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o := defaultOptions()
	fs := flag.NewFlagSet("wssoak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long to hold the load")
	fs.IntVar(&o.Conns, "conns", o.Conns, "connections held at once")
	fs.DurationVar(&o.Ramp, "ramp", o.Ramp, "time over which the connections are opened (0: duration/6, at most 10s)")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "each connection sends one message per interval and checks its echo")
	fs.Float64Var(&o.Churn, "churn", o.Churn, "fraction of the connections closed (1000) and reopened each second")
	fs.DurationVar(&o.TTLMin, "ttl-min", o.TTLMin, "shortest token lifetime (tokens expire while connected: 4001, then reconnect)")
	fs.DurationVar(&o.TTLMax, "ttl-max", o.TTLMax, "longest token lifetime")
	fs.DurationVar(&o.Settle, "settle", o.Settle, "longest wait, after the load, for goroutines and RSS to return to baseline")
	fs.IntVar(&o.GoroutineSlack, "goroutine-slack", o.GoroutineSlack, "goroutines allowed above the baseline after the load")
	fs.Float64Var(&o.HeapSlackMiB, "heap-slack-mib", o.HeapSlackMiB, "live heap (MiB) allowed above the baseline after the load")
	fs.Float64Var(&o.RSSSlackMiB, "rss-slack-mib", o.RSSSlackMiB, "RSS (MiB) allowed above the baseline after the load...")
	fs.Float64Var(&o.RSSPeakShare, "rss-peak-share", o.RSSPeakShare, "...or this share of the RSS rise to the peak, whichever is larger")
	fs.StringVar(&o.Wsgate, "wsgate", o.Wsgate, "wsgate binary to run (default: go build ./cmd/wsgate)")
	fs.BoolVar(&o.Race, "race", o.Race, "build wsgate with the race detector: fail on any race report (RSS is then reported, not judged)")
	fs.BoolVar(&o.Verbose, "v", o.Verbose, "print progress every 10s and wsgate's warnings")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, "wssoak:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := soak(ctx, o, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "wssoak:", err)
		return 1
	}
	rep.print(stdout)
	if len(rep.Failures) > 0 {
		return 1
	}
	return 0
}
