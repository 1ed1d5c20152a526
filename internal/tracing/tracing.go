// Package tracing sets up OpenTelemetry tracing for the wsgate process: an
// OTLP exporter (HTTP or gRPC) chosen by config or by the standard OTEL_*
// environment variables, and W3C trace-context propagation. Packages that
// trace (proxy, cmd/wsgate) use the otel global tracer provider and
// propagator, which Start installs; until then, and when tracing is off,
// those are no-ops and nothing is propagated.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
)

// Protocols of the OTLP exporter, named as OTEL_EXPORTER_OTLP_PROTOCOL names them.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Config is the tracing section of the wsgate config. Its zero value leaves
// tracing to the environment: off unless OTEL_* variables ask for it.
type Config struct {
	// Enabled turns tracing on. Without it, tracing is on only when
	// OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is
	// set. OTEL_SDK_DISABLED=true turns it off whatever the config says.
	Enabled bool
	// Endpoint is the collector's base URL (http://otel-collector:4318, or
	// :4317 for gRPC); http:// means no TLS. Over HTTP, /v1/traces is added
	// when the URL has no path. Defaults to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT,
	// else the exporter's localhost default.
	Endpoint string
	// Protocol is "http/protobuf" or "grpc". Defaults to
	// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else http/protobuf.
	Protocol string
	// SampleRatio is the share of new traces recorded, in (0, 1]; a request
	// carrying a traceparent follows its sampled flag. Zero means
	// OTEL_TRACES_SAMPLER(_ARG), else 1.
	SampleRatio float64
	// Version is reported as service.version.
	Version string
}

// Validate reports every bad field, each named by its config key.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			errs = append(errs, errors.New("tracing.endpoint: must be an http:// or https:// URL without a query"))
		}
	}
	switch c.Protocol {
	case "", ProtocolHTTP, ProtocolGRPC:
	default:
		errs = append(errs, fmt.Errorf("tracing.protocol: %q is not %s or %s", c.Protocol, ProtocolHTTP, ProtocolGRPC))
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, errors.New("tracing.sample_ratio: must be between 0 and 1"))
	}
	return errors.Join(errs...)
}

// On reports whether c, with the environment, turns tracing on.
func (c Config) On() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if c.Enabled {
		return true
	}
	switch strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")) {
	case "otlp":
		return true
	case "none":
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// protocol resolves Protocol against the environment.
func (c Config) protocol() string {
	for _, p := range []string{c.Protocol, os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")} {
		if p = strings.TrimSpace(p); p != "" {
			return p
		}
	}
	return ProtocolHTTP
}

// Provider is the running tracer provider. A nil *Provider (tracing off)
// is valid and does nothing.
type Provider struct {
	tp       *sdktrace.TracerProvider
	Protocol string
}

// Start installs the global tracer provider and the W3C trace-context
// propagator when c (with the environment) turns tracing on, and returns
// nil otherwise. Export errors are logged, never returned: a collector
// that is down costs spans, not connections.
func Start(ctx context.Context, c Config, log *zap.Logger) (*Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.On() {
		return nil, nil
	}
	if log == nil {
		log = zap.NewNop()
	}
	proto := c.protocol()
	var exp sdktrace.SpanExporter
	var err error
	switch proto {
	case ProtocolHTTP:
		var opts []otlptracehttp.Option
		if c.Endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(httpTracesURL(c.Endpoint)))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if c.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(c.Endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q is not %s or %s", proto, ProtocolHTTP, ProtocolGRPC)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	// Later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the defaults.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", "wsgate"), attribute.String("service.version", c.Version)),
		resource.WithFromEnv(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if c.SampleRatio > 0 {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing_export_failed", zap.Error(err))
	}))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return &Provider{tp: tp, Protocol: proto}, nil
}

// Shutdown flushes the spans still queued and stops the exporter, within ctx.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.Shutdown(ctx)
}

// httpTracesURL adds the OTLP/HTTP traces path to a base URL without a path,
// as the exporter does for OTEL_EXPORTER_OTLP_ENDPOINT.
func httpTracesURL(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Path != "" && u.Path != "/") {
		return endpoint
	}
	u.Path = "/v1/traces"
	return u.String()
}
