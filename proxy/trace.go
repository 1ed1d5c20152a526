package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/closecode"
)

// Tracing. A connection is one trace (or a part of the gateway's, when a
// trusted proxy sends a traceparent):
//
//	session          request → close; close codes, closer, traffic, resume
//	└─ handshake     route match → accepted upgrade; events per check passed
//	   └─ upstream.dial   the upstream handshake, which carries this span's traceparent
//
// Spans come from the otel global provider (internal/tracing installs it);
// with tracing off, startTrace leaves the request alone and every hook
// below is a nil check. Attributes never hold a token or a raw query.

// tracer resolves the global provider at each use, so it follows a
// provider installed after this package is initialised.
var tracer = otel.Tracer("github.com/wsgate/wsgate/proxy")

// sessionTrace is one connection's spans. A nil *sessionTrace is a
// connection that is not traced.
type sessionTrace struct {
	session   trace.Span
	handshake trace.Span
}

type traceKey struct{}

// startTrace opens the session and handshake spans and returns r with the
// handshake span in its context (the upstream dial's parent). A
// traceparent is honoured only from a trusted proxy: a client reaching
// wsgate directly cannot pick trace ids or force sampling.
func (h *Handler) startTrace(r *http.Request, rt *route) *http.Request {
	ctx := r.Context()
	if ip := net.ParseIP(clientIP(r)); ip != nil && inNets(ip, h.trusted) {
		ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(r.Header))
	}
	ctx, ss := tracer.Start(ctx, "session", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.route", rt.cfg.Path),
		attribute.String("client.address", clientIP(r)),
	))
	if !ss.SpanContext().IsValid() {
		return r // tracing is off
	}
	ctx, hs := tracer.Start(ctx, "handshake")
	hs.AddEvent("route_matched", trace.WithAttributes(attribute.String("http.route", rt.cfg.Path)))
	st := &sessionTrace{session: ss, handshake: hs}
	return r.WithContext(context.WithValue(ctx, traceKey{}, st))
}

func traceOf(ctx context.Context) *sessionTrace {
	st, _ := ctx.Value(traceKey{}).(*sessionTrace)
	return st
}

// traceEvent marks a handshake check passed on the span in ctx.
func traceEvent(ctx context.Context, name string, attrs ...attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(name, trace.WithAttributes(attrs...))
	}
}

// traceRejected ends the spans of a handshake that failed with err;
// status is the HTTP status answered (0: the client handshake itself failed).
func traceRejected(ctx context.Context, status int, err error) {
	st := traceOf(ctx)
	if st == nil {
		return
	}
	result := "client_accept_failed"
	if status != 0 {
		result = resultFor(status)
		var ue *UpstreamError
		if errors.As(err, &ue) {
			result = "upstream_rejected"
		}
	}
	attrs := []attribute.KeyValue{
		attribute.String("wsgate.handshake.result", result),
		attribute.String("wsgate.handshake.failed_step", failedStep(status, err)),
	}
	if status != 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", status))
	}
	for _, span := range []trace.Span{st.handshake, st.session} {
		span.SetAttributes(attrs...)
		// The result, not err's text: a dial or verification error can quote
		// the upstream URL or parts of the token, which no attribute may hold.
		span.SetStatus(codes.Error, result)
		span.End()
	}
}

// failedStep names the handshake check that refused the connection.
func failedStep(status int, err error) string {
	var ue *UpstreamError
	switch {
	case status == 0:
		return "client_accept"
	case errors.As(err, &ue), errors.Is(err, ErrUpstreamDown), errors.Is(err, ErrUpstreamTimeout), errors.Is(err, ErrUpstreamProtocol):
		return "upstream_dial"
	case errors.Is(err, ErrCapacity), errors.Is(err, ErrUserLimit):
		return "limits"
	case errors.Is(err, ErrRateLimited), errors.Is(err, ErrOrigin), errors.Is(err, ErrNotWebSocket), errors.Is(err, ErrDraining):
		return "admission"
	case errors.Is(err, bridge.ErrUnavailable), errors.Is(err, ErrBadParam):
		return "subscription"
	case errors.Is(err, ErrForbidden):
		return "authorization"
	case status == http.StatusUnauthorized, errors.Is(err, auth.ErrNotReady):
		return "verification"
	}
	return "other"
}

// acceptedTrace ends the handshake span of an accepted connection and
// hands its session span to the session.
func acceptedTrace(r *http.Request, hs *handshake) *sessionTrace {
	st := traceOf(r.Context())
	if st == nil {
		return nil
	}
	st.handshake.SetAttributes(attribute.String("wsgate.handshake.result", "ok"),
		attribute.Int("http.response.status_code", http.StatusSwitchingProtocols))
	st.handshake.End()
	attrs := []attribute.KeyValue{
		attribute.String("wsgate.request_id", hs.reqID),
		attribute.String("enduser.id", hs.id.User),
		attribute.Bool("wsgate.resumed", hs.recovery != nil),
	}
	if hs.id.Tenant != "" {
		attrs = append(attrs, attribute.String("wsgate.tenant", hs.id.Tenant))
	}
	if hs.subprotocol != "" {
		attrs = append(attrs, attribute.String("wsgate.subprotocol", hs.subprotocol))
	}
	if rec := hs.recovery; rec != nil {
		attrs = append(attrs, attribute.Bool("wsgate.resume.recovered", rec.Recovered), attribute.Int("wsgate.resume.replayed", rec.Replayed))
		if rec.Reason != "" {
			attrs = append(attrs, attribute.String("wsgate.resume.reason", rec.Reason))
		}
	}
	st.session.SetAttributes(attrs...)
	return st
}

// abandon ends the spans of a connection accepted just as a drain began.
func (st *sessionTrace) abandon(reason string) {
	if st == nil {
		return
	}
	st.session.SetAttributes(attribute.String("wsgate.close.by", string(closecode.ByWsgate)))
	st.session.SetStatus(codes.Error, reason)
	st.session.End()
}

// end ends the session span with what the connection_closed log line says.
func (st *sessionTrace) end(s *session) {
	if st == nil {
		return
	}
	in, out, bytesIn, bytesOut := s.traffic()
	st.session.SetAttributes(
		attribute.Int("wsgate.close.client_code", int(s.ended.Client)),
		attribute.Int("wsgate.close.upstream_code", int(s.ended.Upstream)),
		attribute.String("wsgate.close.by", string(s.ended.By)),
		attribute.Int64("wsgate.messages.in", in),
		attribute.Int64("wsgate.messages.out", out),
		attribute.Int64("wsgate.bytes.in", bytesIn),
		attribute.Int64("wsgate.bytes.out", bytesOut),
	)
	st.session.End()
}

// withTraceID adds trace_id to a connection's log fields when it is traced.
func (st *sessionTrace) withTraceID(fields []zap.Field) []zap.Field {
	if st == nil {
		return fields
	}
	return append(fields, zap.String("trace_id", st.session.SpanContext().TraceID().String()))
}

// traffic is what the session relayed: messages and bytes from the client
// (to the upstream and channel) and to it.
func (s *session) traffic() (msgsIn, msgsOut, bytesIn, bytesOut int64) {
	return s.msgs[clientToUpstream].Load() + s.msgs[clientToChannel].Load(),
		s.msgs[upstreamToClient].Load() + s.msgs[channelToClient].Load(),
		s.bytes[clientToUpstream].Load() + s.bytes[clientToChannel].Load(),
		s.bytes[upstreamToClient].Load() + s.bytes[channelToClient].Load()
}

// startDial opens the upstream.dial span under the handshake span in ctx
// and puts its traceparent into the upstream request's headers, sampled or
// not, so the upstream follows the same sampling decision. The target is
// described by scheme, host and port only: its query is the client's.
func startDial(ctx context.Context, target string, hdr http.Header) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil // tracing is off
	}
	attrs := []attribute.KeyValue{}
	if u, err := url.Parse(target); err == nil {
		attrs = append(attrs, attribute.String("url.scheme", u.Scheme), attribute.String("server.address", u.Hostname()))
		if p, err := strconv.Atoi(u.Port()); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		}
	}
	ctx, span := tracer.Start(ctx, "upstream.dial", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(hdr))
	return ctx, span
}

// endDial ends the upstream.dial span with the upstream's answer. The
// dial error itself is not recorded: it can quote the upstream URL, query
// included.
func endDial(span trace.Span, resp *http.Response, err error) {
	if span == nil {
		return
	}
	if resp != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	}
	switch {
	case err == nil:
	case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
		span.SetStatus(codes.Error, "upstream refused the upgrade")
	case resp != nil:
		span.SetStatus(codes.Error, "upstream broke the WebSocket handshake")
	default:
		span.SetStatus(codes.Error, "upstream unreachable or timed out")
	}
	span.End()
}
