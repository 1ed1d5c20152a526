package tracing

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidate(t *testing.T) {
	cases := map[string]struct {
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		"zero":            {Config{}, ""},
		"http endpoint":   {Config{Enabled: true, Endpoint: "http://otel-collector:4318", Protocol: ProtocolHTTP, SampleRatio: 0.5}, ""},
		"grpc endpoint":   {Config{Endpoint: "https://otel:4317", Protocol: ProtocolGRPC, SampleRatio: 1}, ""},
		"no scheme":       {Config{Endpoint: "otel-collector:4318"}, "tracing.endpoint"},
		"query":           {Config{Endpoint: "http://otel:4318/v1/traces?key=secret"}, "tracing.endpoint"},
		"bad protocol":    {Config{Protocol: "http/json"}, `tracing.protocol: "http/json"`},
		"ratio above one": {Config{SampleRatio: 1.5}, "tracing.sample_ratio"},
		"negative ratio":  {Config{SampleRatio: -0.1}, "tracing.sample_ratio"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error echoes the endpoint's query: %v", err)
			}
		})
	}
}

func TestOnFollowsTheEnvironment(t *testing.T) {
	cases := map[string]struct {
		enabled bool
		env     map[string]string
		want    bool
	}{
		"off by default":          {false, nil, false},
		"config":                  {true, nil, true},
		"OTLP endpoint":           {false, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		"traces endpoint":         {false, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		"exporter otlp":           {false, map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		"exporter none wins":      {false, map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		"SDK disabled wins":       {true, map[string]string{"OTEL_SDK_DISABLED": "true"}, false},
		"SDK disabled, any case":  {false, map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		"config beats none":       {true, map[string]string{"OTEL_TRACES_EXPORTER": "none"}, true},
		"empty endpoint variable": {false, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
				t.Setenv(k, tc.env[k])
			}
			if got := (Config{Enabled: tc.enabled}).On(); got != tc.want {
				t.Errorf("On() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestProtocolAndURL(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "")
	if got := (Config{}).protocol(); got != ProtocolGRPC {
		t.Errorf("protocol from OTEL_EXPORTER_OTLP_PROTOCOL: %q", got)
	}
	if got := (Config{Protocol: ProtocolHTTP}).protocol(); got != ProtocolHTTP {
		t.Errorf("config protocol lost to the environment: %q", got)
	}
	for in, want := range map[string]string{
		"http://c:4318":           "http://c:4318/v1/traces",
		"http://c:4318/":          "http://c:4318/v1/traces",
		"https://c/otlp/traces":   "https://c/otlp/traces",
		"http://c:4318/v1/traces": "http://c:4318/v1/traces",
	} {
		if got := httpTracesURL(in); got != want {
			t.Errorf("httpTracesURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStartOffReturnsNil(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	p, err := Start(context.Background(), Config{}, nil)
	if err != nil || p != nil {
		t.Fatalf("Start with tracing off: %v, %v; want nil, nil", p, err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("nil Provider Shutdown: %v", err)
	}
	if _, err := Start(context.Background(), Config{Enabled: true, Protocol: "thrift"}, nil); err == nil {
		t.Error("Start accepted an unknown protocol")
	}
}
