package main

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/viper"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/tracing"
	"github.com/wsgate/wsgate/proxy"
)

// decodeTracing reads the tracing section; its keys are in defaults.
func decodeTracing(v *viper.Viper, cfg *config) []error {
	var tc struct {
		Enabled     bool    `mapstructure:"enabled"`
		Endpoint    string  `mapstructure:"endpoint"`
		Protocol    string  `mapstructure:"protocol"`
		SampleRatio float64 `mapstructure:"sample_ratio"`
	}
	if err := v.UnmarshalKey("tracing", &tc); err != nil {
		return []error{decodeError(err)}
	}
	cfg.Tracing = tracing.Config{Enabled: tc.Enabled, Endpoint: tc.Endpoint, Protocol: tc.Protocol, SampleRatio: tc.SampleRatio, Version: version}
	return prefixed("", cfg.Tracing.Validate())
}

// startTracing installs the tracer provider when the config or the OTEL_*
// environment asks for it. The returned func flushes queued spans.
func startTracing(cfg *config, log *zap.Logger) (func(), error) {
	p, err := tracing.Start(context.Background(), cfg.Tracing, log.Named("tracing"))
	if err != nil {
		return nil, err
	}
	if p != nil {
		log.Info("tracing_enabled", zap.String("protocol", p.Protocol), zap.Float64("sample_ratio", cfg.Tracing.SampleRatio))
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			log.Warn("tracing_flush_failed", zap.Error(err))
		}
	}, nil
}

// notReady is why /readyz answers 503, or "" when ready.
func notReady(v *auth.Verifier, h *proxy.Handler) string {
	switch {
	case h.Draining():
		return "draining"
	case !v.Ready():
		return "verification keys not loaded"
	}
	return ""
}

// registerHealth exports what /readyz and the Redis connection say as
// gauges, for alerts: an instance that stays unready, a lost broker.
func registerHealth(reg prometheus.Registerer, v *auth.Verifier, h *proxy.Handler, hub *bridge.Hub, redis bool) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "wsgate_ready", Help: "1 when /readyz answers 200: verification keys loaded and not draining.",
	}, func() float64 { return boolGauge(notReady(v, h) == "") }))
	if redis {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsgate_bridge_redis_up", Help: "1 while the Redis Pub/Sub connection is up (only with redis.url).",
		}, func() float64 { return boolGauge(hub.Ready()) }))
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// tracePublish gives each POST /publish a span, child of the caller's
// traceparent (the admin listener is internal: its callers are trusted).
func tracePublish(next http.Handler) http.Handler {
	tracer := otel.Tracer("github.com/wsgate/wsgate/cmd/wsgate")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, "publish", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.route", "/publish")))
		if !span.IsRecording() {
			next.ServeHTTP(w, r)
			return
		}
		defer span.End()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
		if sw.status >= 400 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// tracePublished names the channel and size of a publish on its span.
func tracePublished(ctx context.Context, channel string, size int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.destination.name", channel), attribute.Int("messaging.message.body.size", size))
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
