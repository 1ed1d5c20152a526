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
	if _, err := loadConfig(fs); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "config OK")
	return 0
}

// runServer serves until SIGTERM or SIGINT, then drains and returns the
// exit code. extras adds handlers to the public listener (the demo's).
func runServer(cfg *config, stderr io.Writer, extras func(*http.ServeMux, *bridge.Hub) error) int {
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

// serve runs wsgate until ctx ends, then drains: /readyz turns 503 at once,
// new upgrades get 503, open sockets are closed with 1001 over
// shutdown_grace, and the listeners close. unsignal restores default signal
// handling, so a second signal kills the process at once.
func serve(ctx context.Context, unsignal func(), cfg *config, log *zap.Logger, extras func(*http.ServeMux, *bridge.Hub) error) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	verifier, err := auth.New(cfg.Auth, log.Named("auth"), reg)
	if err != nil {
		return err
	}
	hub, err := bridge.New(cfg.Bridge, log.Named("bridge"), reg)
	if err != nil {
		return err
	}
	handler, err := proxy.New(cfg.Proxy, verifier, hub, log.Named("proxy"), reg)
	if err != nil {
		return err
	}
	var shared *limit.Redis
	if cfg.Bridge.URL != "" {
		if shared, err = limit.New(cfg.Bridge.URL, log.Named("limit"), reg); err != nil {
			return fmt.Errorf("redis.url: %w", err)
		}
		handler.ShareLimits(shared)
	}

	mux := http.NewServeMux()
	mux.Handle("/", handler)
	mux.Handle("/auth/verify", handler.VerifyHandler())
	adminMux := http.NewServeMux()
	adminMux.Handle("/", adminHandler(verifier, handler, hub, reg, cfg.Proxy.MaxMessageBytes))
	runTickets, err := useTickets(cfg, handler, mux, adminMux) // tickets.go: /auth/ticket, assertions, JWKS
	if err != nil {
		return err
	}
	if extras != nil {
		if err := extras(mux, hub); err != nil {
			return err
		}
	}
	pubLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		pubLn.Close()
		return fmt.Errorf("admin_listen: %w", err)
	}
	httpLog, _ := zap.NewStdLogAt(log.Named("http"), zapcore.WarnLevel)
	public := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          httpLog,
	}
	admin := &http.Server{
		Handler:           adminMux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          httpLog,
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
