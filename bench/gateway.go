package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/proxy"
)

// runGateway is `bench gateway`: wsgate's auth, bridge and proxy wired as
// cmd/wsgate's serve wires them (same Handler, same http.Server settings,
// warn-level logging), plus net/http/pprof on the admin listener. Only the
// -profile run uses it; every measured figure comes from the real binary.
func runGateway(args []string) int {
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "public listen address")
	admin := fs.String("admin", "127.0.0.1:0", "admin listen address (pprof, /metrics, /readyz)")
	upstream := fs.String("upstream", "", "ws:// URL of the echo upstream")
	redisURL := fs.String("redis", "", "Redis URL for the bridge (default: in-process broker)")
	fs.Parse(args)

	log := zap.NewNop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	v, err := auth.New(auth.Config{HMACSecret: []byte(benchSecret), Leeway: 30 * time.Second}, log, reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hub, err := bridge.New(bridge.Config{URL: *redisURL}, log, reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h, err := proxy.New(proxy.Config{
		Routes:          []proxy.Route{{Path: "/ws/echo", Upstream: *upstream}, {Path: "/ws/stream/{ch}", Subscribe: []string{"bench:{ch}"}}},
		MaxMessageBytes: 2 << 20,
		Limits: proxy.Limits{MaxConnections: 1e5, MaxConnectionsPerUser: 1e5, MaxConnectionsPerTenant: 1e5,
			HandshakesPerSecondPerIP: 1e6, HandshakesPerSecondPerUser: 1e6, MessagesPerSecond: 1e6},
	}, v, hub, log, reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go v.Run(ctx)
	go hub.Run(ctx)

	amux := http.NewServeMux()
	amux.HandleFunc("/debug/pprof/", pprof.Index)
	amux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	amux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	amux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !hub.Ready() {
			http.Error(w, "broker not connected", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	pub, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	adm, err := net.Listen("tcp", *admin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	public := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10, IdleTimeout: 60 * time.Second}
	go public.Serve(pub)
	go (&http.Server{Handler: amux}).Serve(adm)
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	h.Drain(dctx)
	cancel()
	return 0
}
