package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/wsgate/wsgate/internal/wstest"
)

// collector is an in-process OTLP trace receiver (HTTP or gRPC) that keeps every span.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// ServeHTTP is OTLP/HTTP with protobuf bodies, as the exporter sends them.
func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.Error(w, "want POST /v1/traces", http.StatusNotFound)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	req := new(collectortrace.ExportTraceServiceRequest)
	if err == nil {
		err = proto.Unmarshal(b, req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, _ := c.Export(r.Context(), req)
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// span returns the one span named name in trace traceID, waiting for the exporter.
func (c *collector) span(t *testing.T, traceID []byte, name string) *tracepb.Span {
	t.Helper()
	var found []*tracepb.Span
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		found = found[:0]
		for _, s := range c.spans {
			if s.Name == name && (traceID == nil || bytes.Equal(s.TraceId, traceID)) {
				found = append(found, s)
			}
		}
		c.mu.Unlock()
		if len(found) == 1 {
			return found[0]
		}
		if len(found) > 1 || time.Now().After(deadline) {
			t.Fatalf("%d spans named %s in trace %x, want 1", len(found), name, traceID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// all returns every span received so far.
func (c *collector) all() []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.Span(nil), c.spans...)
}

func attrs(s *tracepb.Span) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes {
		m[kv.Key] = value(kv.Value)
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	}
	return fmt.Sprint(v)
}

func events(s *tracepb.Span) []string {
	var out []string
	for _, e := range s.Events {
		out = append(out, e.Name)
	}
	return out
}

// startTraced runs wsgate with cfg and extra environment variables.
func startTraced(t *testing.T, cfg string, env ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(wsgateBin, "serve", "--config", writeConfig(t, cfg)), stderr: &wstest.LogSink{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr, p.cmd.Stdout = p.stderr, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// startTracedOverHTTP starts a ready wsgate exporting spans over OTLP/HTTP
// (batches every 50 ms) to an in-process collector, with routes (YAML list
// items; %q is the echo upstream's URL).
func startTracedOverHTTP(t *testing.T, routes string, env ...string) (col *collector, up *wstest.Upstream, listen, admin string, p *process) {
	t.Helper()
	col = &collector{}
	recv := httptest.NewServer(col)
	t.Cleanup(recv.Close)
	up = wstest.NewUpstream(t)
	listen, admin = freeAddr(t), freeAddr(t)
	p = startTraced(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
tracing: {enabled: true, endpoint: %q, protocol: http/protobuf}
routes:`, listen, admin, wstest.Secret, recv.URL)+fmt.Sprintf(routes, up.WSURL()+"/echo"),
		append([]string{"OTEL_BSP_SCHEDULE_DELAY=50"}, env...)...)
	waitReady(t, admin, p)
	return col, up, listen, admin, p
}

// TestTraceOfOneSession: a real wsgate exporting over OTLP/HTTP to an in-process receiver. One
// connection through a gateway that sends a traceparent gives the span tree
// session → handshake → upstream.dial in the gateway's trace; the upstream received the dial
// span's traceparent; the session span carries the close codes, closer and traffic; the log
// lines carry the trace id; no attribute holds the token or the query. A refused handshake
// and a POST /publish get their spans too.
func TestTraceOfOneSession(t *testing.T) {
	col, up, listen, admin, p := startTracedOverHTTP(t, `
  - {path: /ws/echo, upstream: %q}
  - {path: /ws/feed, subscribe: [feed]}
`, "OTEL_SERVICE_NAME=wsgate-trace-test")

	const gwTrace, gwSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tok := wstest.Token(t, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo?token="+tok+"&q=private-query", &websocket.DialOptions{
		HTTPHeader: http.Header{"Traceparent": {"00-" + gwTrace + "-" + gwSpan + "-01"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("hello through a traced gateway")
	if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo %q %v", got, err)
	}
	c.Close(websocket.StatusNormalClosure, "bye")

	traceID, _ := hex.DecodeString(gwTrace)
	parent, _ := hex.DecodeString(gwSpan)
	session := col.span(t, traceID, "session")
	handshake := col.span(t, traceID, "handshake")
	dial := col.span(t, traceID, "upstream.dial")
	switch {
	case !bytes.Equal(session.ParentSpanId, parent):
		t.Errorf("session parent %x, want the gateway's span %s", session.ParentSpanId, gwSpan)
	case !bytes.Equal(handshake.ParentSpanId, session.SpanId):
		t.Errorf("handshake parent %x, want session %x", handshake.ParentSpanId, session.SpanId)
	case !bytes.Equal(dial.ParentSpanId, handshake.SpanId):
		t.Errorf("upstream.dial parent %x, want handshake %x", dial.ParentSpanId, handshake.SpanId)
	}
	if session.Kind != tracepb.Span_SPAN_KIND_SERVER || dial.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("kinds: session %v, upstream.dial %v; want server, client", session.Kind, dial.Kind)
	}
	want := map[string]any{
		"http.route": "/ws/echo", "wsgate.close.client_code": int64(1000), "wsgate.close.upstream_code": int64(1000),
		"wsgate.close.by": "client", "wsgate.messages.in": int64(1), "wsgate.messages.out": int64(1),
		"wsgate.bytes.in": int64(len(msg)), "wsgate.bytes.out": int64(len(msg)), "wsgate.resumed": false,
		"enduser.id": "alice", "wsgate.tenant": "t1",
	}
	got := attrs(session)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("session %s = %v (%T), want %v", k, got[k], got[k], v)
		}
	}
	if a := attrs(handshake); a["wsgate.handshake.result"] != "ok" || a["http.response.status_code"] != int64(101) {
		t.Errorf("handshake attributes %v, want result ok and status 101", a)
	}
	if ev := strings.Join(events(handshake), ","); ev != "route_matched,token_verified" {
		t.Errorf("handshake events %s, want route_matched,token_verified", ev)
	}
	if a := attrs(dial); a["server.address"] != "127.0.0.1" || a["http.response.status_code"] != int64(101) {
		t.Errorf("upstream.dial attributes %v", a)
	}
	if tp, want := up.LastRequest(t).Header.Get("Traceparent"), fmt.Sprintf("00-%s-%x-01", gwTrace, dial.SpanId); tp != want {
		t.Errorf("upstream got traceparent %q, want %q", tp, want)
	}

	// A gateway that sampled the request out: nothing is exported, but the upstream gets the
	// same trace, unsampled, so it makes the same decision.
	const unsampled = "22222222222222222222222222222222"
	c2, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo?token="+tok, &websocket.DialOptions{
		HTTPHeader: http.Header{"Traceparent": {"00-" + unsampled + "-" + gwSpan + "-00"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c2.Close(websocket.StatusNormalClosure, "")
	if tp := up.LastRequest(t).Header.Get("Traceparent"); !strings.HasPrefix(tp, "00-"+unsampled+"-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("upstream got traceparent %q for an unsampled trace, want 00-%s-<span>-00", tp, unsampled)
	}

	// A refused handshake: both spans end with an error naming the failed step.
	if _, resp, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo?token=garbage", &websocket.DialOptions{
		HTTPHeader: http.Header{"Traceparent": {"00-" + strings.Repeat("ab", 16) + "-" + gwSpan + "-01"}},
	}); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token: %v %v, want 401", resp, err)
	}
	badTrace, _ := hex.DecodeString(strings.Repeat("ab", 16))
	rejected := col.span(t, badTrace, "handshake")
	if a := attrs(rejected); a["wsgate.handshake.failed_step"] != "verification" || a["http.response.status_code"] != int64(401) ||
		rejected.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("rejected handshake %v status %v, want failed_step verification, 401, error", a, rejected.Status)
	}
	if s := col.span(t, badTrace, "session"); s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("rejected session status %v, want error", s.Status)
	}

	// POST /publish, called with the publisher's traceparent.
	const pubTrace = "11111111111111111111111111111111"
	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/publish?channel=feed", strings.NewReader("news"))
	req.Header.Set("Traceparent", "00-"+pubTrace+"-"+gwSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("publish: %s", resp.Status)
	}
	pt, _ := hex.DecodeString(pubTrace)
	pub := col.span(t, pt, "publish")
	if a := attrs(pub); a["messaging.destination.name"] != "feed" || a["messaging.message.body.size"] != int64(4) || a["http.response.status_code"] != int64(204) {
		t.Errorf("publish span attributes %v", a)
	}

	// No attribute anywhere holds the token or the client's query; the unsampled trace
	// exported nothing.
	for _, s := range col.all() {
		if hex.EncodeToString(s.TraceId) == unsampled {
			t.Errorf("span %s of the unsampled trace was exported", s.Name)
		}
		for _, kv := range s.Attributes {
			if v := fmt.Sprint(value(kv.Value)); strings.Contains(v, tok) || strings.Contains(v, "private-query") || strings.Contains(v, "garbage") {
				t.Errorf("span %s attribute %s = %q leaks the token or query", s.Name, kv.Key, v)
			}
		}
		if strings.Contains(s.Status.GetMessage(), tok) || strings.Contains(s.Status.GetMessage(), "private-query") {
			t.Errorf("span %s status %q leaks the token or query", s.Name, s.Status.GetMessage())
		}
	}

	// Each connection's two log lines carry its trace id, sampled or not.
	wstest.WaitFor(t, "both connection_closed lines", func() bool { return strings.Count(p.stderr.String(), "connection_closed") == 2 })
	lines := map[string]int{}
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && (l["msg"] == "connection_opened" || l["msg"] == "connection_closed") {
			lines[fmt.Sprint(l["msg"], " ", l["trace_id"])]++
		}
	}
	wantLines := map[string]int{"connection_opened " + gwTrace: 1, "connection_closed " + gwTrace: 1,
		"connection_opened " + unsampled: 1, "connection_closed " + unsampled: 1}
	if fmt.Sprint(lines) != fmt.Sprint(wantLines) {
		t.Errorf("connection log lines by trace_id %v, want %v", lines, wantLines)
	}
}

// TestTraceOverGRPCFromEnv: OTEL_* variables alone turn tracing on, over gRPC. A traceparent
// from a peer outside limits.trusted_proxies is not honoured: wsgate starts its own trace.
func TestTraceOverGRPCFromEnv(t *testing.T) {
	col := &collector{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() { srv.Stop(); <-served }()

	up := wstest.NewUpstream(t)
	listen, admin := freeAddr(t), freeAddr(t)
	p := startTraced(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
limits: {trusted_proxies: ["10.0.0.0/8"]}
routes:
  - {path: /ws/echo, upstream: %q}
`, listen, admin, wstest.Secret, up.WSURL()+"/echo"),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+l.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_BSP_SCHEDULE_DELAY=50")
	waitReady(t, admin, p)

	const spoofed = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo", &websocket.DialOptions{HTTPHeader: http.Header{
		"Authorization": {"Bearer " + wstest.Token(t, "bob", nil)},
		"Traceparent":   {"00-" + spoofed + "-00f067aa0ba902b7-01"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")

	session := col.span(t, nil, "session")
	if hex.EncodeToString(session.TraceId) == spoofed || len(session.ParentSpanId) != 0 {
		t.Errorf("session in trace %x with parent %x: a direct client chose the trace", session.TraceId, session.ParentSpanId)
	}
	dial := col.span(t, session.TraceId, "upstream.dial")
	if tp, want := up.LastRequest(t).Header.Get("Traceparent"), fmt.Sprintf("00-%x-%x-01", session.TraceId, dial.SpanId); tp != want {
		t.Errorf("upstream got traceparent %q, want %q", tp, want)
	}
	if a := attrs(session); a["wsgate.close.by"] != "client" || a["wsgate.close.client_code"] != int64(1000) {
		t.Errorf("session attributes %v", a)
	}
	p.cmd.Process.Signal(os.Interrupt)
	if err := <-p.done; err != nil {
		t.Errorf("wsgate exit: %v\n%s", err, p.stderr.String())
	}
	p.done <- nil
}

// TestTracingOffByDefault: without tracing config or OTEL_* variables nothing is exported and
// the upstream gets no traceparent, even when the client sent one.
func TestTracingOffByDefault(t *testing.T) {
	up := wstest.NewUpstream(t)
	listen, admin := freeAddr(t), freeAddr(t)
	p := startTraced(t, fmt.Sprintf(`
listen: %q
admin_listen: %q
auth: {hmac_secret: %q}
routes:
  - {path: /ws/echo, upstream: %q}
`, listen, admin, wstest.Secret, up.WSURL()+"/echo"), "OTEL_EXPORTER_OTLP_ENDPOINT=", "OTEL_TRACES_EXPORTER=")
	waitReady(t, admin, p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/echo", &websocket.DialOptions{HTTPHeader: http.Header{
		"Authorization": {"Bearer " + wstest.Token(t, "carol", nil)},
		"Traceparent":   {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if tp := up.LastRequest(t).Header.Get("Traceparent"); tp != "" {
		t.Errorf("upstream got traceparent %q with tracing off", tp)
	}
	wstest.WaitFor(t, "connection_closed", func() bool { return strings.Contains(p.stderr.String(), "connection_closed") })
	if strings.Contains(p.stderr.String(), "trace_id") || strings.Contains(p.stderr.String(), "tracing_enabled") {
		t.Errorf("trace ids logged with tracing off:\n%s", p.stderr.String())
	}
}

func waitReady(t *testing.T, admin string, p *process) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for httpStatus("http://"+admin+"/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("wsgate not ready:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A first-message connection is traced like a token handshake: the same
// session → handshake → upstream.dial tree under the gateway's span, the
// upstream gets the dial span's traceparent, and a bad auth message ends
// the spans with the verification step, never the token's text.
func TestTraceOfFirstMessageSession(t *testing.T) {
	col, up, listen, _, _ := startTracedOverHTTP(t, `
  - {path: /ws/assistant, upstream: %q, auth: first_message}
`)

	const gwTrace, gwSpan = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8"
	dial := func(trace string) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+listen+"/ws/assistant", &websocket.DialOptions{
			HTTPHeader: http.Header{"Traceparent": {"00-" + trace + "-" + gwSpan + "-01"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(gwTrace)
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"auth","token":"`+wstest.Token(t, "alice", nil)+`"}`))
	if _, ack, err := c.Read(ctx); err != nil || !bytes.Contains(ack, []byte(`"wsgate.auth"`)) {
		t.Fatalf("ack %s %v", ack, err)
	}
	c.Close(websocket.StatusNormalClosure, "")

	traceID, _ := hex.DecodeString(gwTrace)
	parent, _ := hex.DecodeString(gwSpan)
	session := col.span(t, traceID, "session")
	handshake := col.span(t, traceID, "handshake")
	dialSpan := col.span(t, traceID, "upstream.dial")
	if !bytes.Equal(session.ParentSpanId, parent) || !bytes.Equal(handshake.ParentSpanId, session.SpanId) ||
		!bytes.Equal(dialSpan.ParentSpanId, handshake.SpanId) {
		t.Errorf("span tree: session←%x handshake←%x dial←%x", session.ParentSpanId, handshake.ParentSpanId, dialSpan.ParentSpanId)
	}
	if ev := strings.Join(events(handshake), ","); ev != "route_matched,token_verified" {
		t.Errorf("handshake events %s", ev)
	}
	if a := attrs(session); a["enduser.id"] != "alice" || a["wsgate.close.client_code"] != int64(1000) {
		t.Errorf("session attributes %v", a)
	}
	if tp, want := up.LastRequest(t).Header.Get("Traceparent"), fmt.Sprintf("00-%s-%x-01", gwTrace, dialSpan.SpanId); tp != want {
		t.Errorf("upstream got traceparent %q, want %q", tp, want)
	}

	badTrace := strings.Repeat("cd", 16)
	c = dial(badTrace)
	const forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.forged-signature"
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"auth","token":"`+forged+`"}`))
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 4401 {
		t.Fatalf("bad auth message: %v, want 4401", err)
	}
	bad, _ := hex.DecodeString(badTrace)
	rejected := col.span(t, bad, "handshake")
	if a := attrs(rejected); a["wsgate.handshake.failed_step"] != "verification" || rejected.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("rejected first-message handshake %v %v", a, rejected.Status)
	}
	for _, s := range col.all() {
		if strings.Contains(s.Status.GetMessage(), "forged-signature") || strings.Contains(fmt.Sprint(s.Attributes), "forged-signature") {
			t.Errorf("span %s carries the token", s.Name)
		}
	}
}
