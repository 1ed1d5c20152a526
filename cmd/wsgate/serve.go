package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/limit"
	"github.com/wsgate/wsgate/proxy"
)

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(fs)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return runServer(cfg, stderr, nil)
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("validate", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(fs)
	if err == nil {
		// Everything serve builds, but for binding and dialling.
		_, err = newGateway(cfg, zap.NewNop(), nil)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "config OK")
	return 0
}

// runServer serves until SIGTERM or SIGINT, then drains and returns the
// exit code. extras adds handlers to the public listener (the demo's).
func runServer(cfg *config, stderr io.Writer, extras func(*proxy.Handler, *bridge.Hub) error) int {
	log := newLogger(cfg.LogLevel, stderr)
	defer log.Sync()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, stop, cfg, log, extras); err != nil {
		log.Error("wsgate_failed", zap.Error(err))
		return 1
	}
	return 0
}

func newLogger(level zapcore.Level, w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core)
}

// Admin listener timeouts: a request's headers, its whole body (a publish
// of up to max_message_bytes), the answer, and an idle keep-alive.
const (
	AdminReadHeaderTimeout = 5 * time.Second
	AdminReadTimeout       = 10 * time.Second
	AdminWriteTimeout      = 30 * time.Second
	AdminIdleTimeout       = 30 * time.Second
)

// gateway is everything serve runs, built but not yet listening or
// connected. validate builds one too, so a config it accepts starts.
type gateway struct {
	verifier *auth.Verifier
	hub      *bridge.Hub
	handler  *proxy.Handler
	shared   *limit.Redis // nil without redis.url
	// runTickets keeps the Redis ticket store connected; nil without
	// redis.url.
	runTickets func(context.Context) error
	public     *http.Server
	admin      *http.Server
}

// newGateway builds wsgate from cfg without binding a port or dialling
// anything. extras adds handlers to the public listener (the demo's).
func newGateway(cfg *config, log *zap.Logger, extras func(*proxy.Handler, *bridge.Hub) error) (*gateway, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gw := &gateway{}
	var err error
	if gw.verifier, err = auth.New(cfg.Auth, log.Named("auth"), reg); err != nil {
		return nil, err
	}
	if gw.hub, err = bridge.New(cfg.Bridge, log.Named("bridge"), reg); err != nil {
		return nil, err
	}
	if gw.handler, err = proxy.New(cfg.Proxy, gw.verifier, gw.hub, log.Named("proxy"), reg); err != nil {
		return nil, err
	}
	registerHealth(reg, gw.verifier, gw.handler, gw.hub, cfg.Bridge.URL != "") // observability hook (observe.go)
	if cfg.Bridge.URL != "" {
		if gw.shared, err = limit.New(cfg.Bridge.URL, log.Named("limit"), reg); err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		gw.handler.ShareLimits(gw.shared)
	}
	adminMux := http.NewServeMux()
	adminMux.Handle("/", adminHandler(gw.verifier, gw.handler, gw.hub, reg, cfg.Proxy.MaxMessageBytes, cfg.PublishToken))
	if gw.runTickets, err = useTickets(cfg, gw.handler, adminMux); err != nil { // tickets.go: /auth/ticket, assertions, JWKS
		return nil, err
	}
	if extras != nil {
		if err := extras(gw.handler, gw.hub); err != nil {
			return nil, err
		}
	}
	httpLog, _ := zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel)
	gw.public = &http.Server{
		Handler:           gw.handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          httpLog,
	}
	// The admin listener is for probes, scrapes and producers inside the
	// pod or cluster: every phase of a request is bounded.
	gw.admin = &http.Server{
		Handler:           adminMux,
		ReadHeaderTimeout: AdminReadHeaderTimeout,
		ReadTimeout:       AdminReadTimeout,
		WriteTimeout:      AdminWriteTimeout,
		IdleTimeout:       AdminIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          httpLog,
	}
	return gw, nil
}

// serve runs wsgate until ctx ends, then drains: /readyz turns 503 at once,
// new upgrades get 503, open sockets are closed with 1001 over
// shutdown_grace, and the listeners close. unsignal restores default signal
// handling, so a second signal kills the process at once.
func serve(ctx context.Context, unsignal func(), cfg *config, log *zap.Logger, extras func(*proxy.Handler, *bridge.Hub) error) error {
	gw, err := newGateway(cfg, log, extras)
	if err != nil {
		return err
	}
	stopTracing, err := startTracing(cfg, log) // observability hook (observe.go)
	if err != nil {
		return err
	}
	defer stopTracing()
	verifier, hub, handler, shared, runTickets, public, admin := gw.verifier, gw.hub, gw.handler, gw.shared, gw.runTickets, gw.public, gw.admin
	pubLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		pubLn.Close()
		return fmt.Errorf("admin_listen: %w", err)
	}
	// Every goroutine below is stopped by runCancel or a server Shutdown and
	// waited for by wg; errc has room for each, so none blocks on send.
	runCtx, runCancel := context.WithCancel(context.Background())
	defer runCancel()
	var wg sync.WaitGroup
	errc := make(chan error, 6)
	start := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	start("auth", func() error { return verifier.Run(runCtx) })
	start("bridge", func() error { return hub.Run(runCtx) })
	if shared != nil {
		start("limit", func() error { return shared.Run(runCtx) })
	}
	if runTickets != nil {
		start("tickets", func() error { return runTickets(runCtx) })
	}
	start("listen", func() error { return public.Serve(pubLn) })
	start("admin_listen", func() error { return admin.Serve(adminLn) })
	log.Info("wsgate_started", zap.String("version", version), zap.String("listen", pubLn.Addr().String()),
		zap.String("admin_listen", adminLn.Addr().String()), zap.Int("routes", len(cfg.Proxy.Routes)),
		zap.Bool("redis", cfg.Bridge.URL != ""))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	unsignal()
	grace := cfg.Proxy.ShutdownGrace
	if grace == 0 {
		grace = proxy.DefaultShutdownGrace
	}
	log.Info("draining", zap.Int("connections", handler.Active()), zap.Duration("shutdown_grace", grace))
	drainCtx, cancel := context.WithTimeout(context.Background(), grace)
	handler.Drain(drainCtx)
	cancel()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	public.Shutdown(shutCtx)
	admin.Shutdown(shutCtx)
	cancel()
	runCancel()
	wg.Wait()
	log.Info("wsgate_stopped")
	return runErr
}
