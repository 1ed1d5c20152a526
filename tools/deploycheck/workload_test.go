package deploycheck

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// wsgateUID is the distroless "nonroot" user the image runs as.
const wsgateUID = 65532

// wsgateConfig mirrors wsgate's config file. Decoding is strict, so a key the chart or a
// manifest writes that wsgate does not know fails here too, even without the binary.
type wsgateConfig struct {
	Listen          string   `json:"listen"`
	AdminListen     string   `json:"admin_listen"`
	ShutdownGrace   string   `json:"shutdown_grace"`
	AllowedOrigins  []string `json:"allowed_origins"`
	MaxMessageBytes int64    `json:"max_message_bytes"`
	Heartbeat       struct {
		Interval string `json:"interval"`
		Timeout  string `json:"timeout"`
	} `json:"heartbeat"`
	DialTimeout  string `json:"dial_timeout"`
	WriteTimeout string `json:"write_timeout"`
	LogLevel     string `json:"log_level"`
	Auth         struct {
		HMACSecret        string   `json:"hmac_secret"`
		PublicKeys        []string `json:"public_keys"`
		JWKSURL           string   `json:"jwks_url"`
		JWKSRefresh       string   `json:"jwks_refresh"`
		Issuer            string   `json:"issuer"`
		Audience          []string `json:"audience"`
		Leeway            string   `json:"leeway"`
		QueryParam        string   `json:"query_param"`
		Cookie            string   `json:"cookie"`
		UserClaim         string   `json:"user_claim"`
		TenantClaim       string   `json:"tenant_claim"`
		SubprotocolPrefix string   `json:"subprotocol_prefix"`
	} `json:"auth"`
	Redis struct {
		URL string `json:"url"`
	} `json:"redis"`
	Admin struct {
		PublishToken string `json:"publish_token"`
	} `json:"admin"`
	Routes []struct {
		Path      string            `json:"path"`
		Upstream  string            `json:"upstream"`
		Subscribe []string          `json:"subscribe"`
		Publish   string            `json:"publish"`
		Require   map[string]string `json:"require"`
	} `json:"routes"`
}

func parseConfig(t *testing.T, where, text string) wsgateConfig {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict([]byte(text))
	if err != nil {
		t.Fatalf("%s: config is not YAML: %v", where, err)
	}
	var c wsgateConfig
	if err := strictUnmarshal(js, &c); err != nil {
		t.Fatalf("%s: config has keys wsgate does not know: %v", where, err)
	}
	if len(c.Routes) == 0 {
		t.Fatalf("%s: config has no routes", where)
	}
	for i, r := range c.Routes {
		if r.Upstream == "" && len(r.Subscribe) == 0 && r.Publish == "" {
			t.Errorf("%s: routes[%d] (%s) has no upstream, subscribe or publish", where, i, r.Path)
		}
	}
	if c.Auth.HMACSecret != "" {
		t.Errorf("%s: auth.hmac_secret is set in a ConfigMap; it belongs in a Secret", where)
	}
	if c.Admin.PublishToken != "" {
		t.Errorf("%s: admin.publish_token is set in a ConfigMap; it belongs in a Secret", where)
	}
	return c
}

func (c wsgateConfig) hasBridgeRoutes() bool {
	for _, r := range c.Routes {
		if len(r.Subscribe) > 0 || r.Publish != "" {
			return true
		}
	}
	return false
}

// shutdownGrace is config.shutdown_grace, 25s when unset (wsgate's default).
func (c wsgateConfig) shutdownGrace(t *testing.T) time.Duration {
	t.Helper()
	if c.ShutdownGrace == "" {
		return 25 * time.Second
	}
	d, err := time.ParseDuration(c.ShutdownGrace)
	if err != nil {
		t.Fatalf("shutdown_grace %q: %v", c.ShutdownGrace, err)
	}
	return d
}

func portOf(t *testing.T, addr, def string) int32 {
	t.Helper()
	if addr == "" {
		addr = def
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// podWant is what a pod carrying wsgate must look like.
type podWant struct {
	// secretName/secretKey: where WSGATE_AUTH_HMAC_SECRET comes from; empty means no such env.
	secretName string
	secretKey  string
	// publishName/publishKey: where WSGATE_ADMIN_PUBLISH_TOKEN comes from; empty means no such env
	// (POST /publish open).
	publishName string
	publishKey  string
	// native: wsgate is a restartable init container (native sidecar).
	native bool
	// grace is the exact terminationGracePeriodSeconds expected.
	grace int64
	// preStop is the expected lifecycle.preStop.sleep seconds (0: none).
	preStop int64
}

// checkWsgatePod asserts the wsgate container of a pod spec and returns its config (read from the
// ConfigMap the container mounts) and the container itself.
func checkWsgatePod(t *testing.T, where string, ms manifests, spec corev1.PodSpec, want podWant) (wsgateConfig, string, corev1.Container) {
	t.Helper()
	var c *corev1.Container
	list := spec.Containers
	if want.native {
		list = spec.InitContainers
	}
	for i := range list {
		if list[i].Name == "wsgate" {
			c = &list[i]
		}
	}
	if c == nil {
		t.Fatalf("%s: no wsgate container in %s", where, map[bool]string{true: "initContainers", false: "containers"}[want.native])
	}
	if want.native {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: native sidecar needs restartPolicy Always, got %v", where, c.RestartPolicy)
		}
	} else if c.RestartPolicy != nil {
		t.Errorf("%s: regular container must not set restartPolicy, got %v", where, *c.RestartPolicy)
	}

	if got, want := fmt.Sprint(c.Args), "[serve --config /etc/wsgate/config.yaml]"; got != want {
		t.Errorf("%s: args %s, want %s", where, got, want)
	}

	// The config file: mounted read-only at /etc/wsgate from a ConfigMap that exists.
	var volName string
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/wsgate" {
			volName = m.Name
			if !m.ReadOnly {
				t.Errorf("%s: /etc/wsgate must be mounted read-only", where)
			}
			if m.SubPath != "" {
				t.Errorf("%s: /etc/wsgate must not use subPath (subPath mounts never see ConfigMap updates)", where)
			}
		}
	}
	var cmName string
	for _, v := range spec.Volumes {
		if v.Name == volName && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName == "" {
		t.Fatalf("%s: /etc/wsgate is not mounted from a ConfigMap volume", where)
	}
	cm := ms.named(t, "ConfigMap", cmName).Typed.(*corev1.ConfigMap)
	text, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("%s: ConfigMap %s has no config.yaml", where, cmName)
	}
	cfg := parseConfig(t, where+" ConfigMap "+cmName, text)

	// Ports follow the config's listen addresses.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	httpPort, adminPort := portOf(t, cfg.Listen, ":8080"), portOf(t, cfg.AdminListen, ":9090")
	if ports["http"] != httpPort || ports["admin"] != adminPort {
		t.Errorf("%s: container ports %v, want http=%d admin=%d", where, ports, httpPort, adminPort)
	}

	// Probes: wsgate's own admin endpoints, never the upstream.
	checkProbe(t, where+" liveness", c.LivenessProbe, "/healthz", ports, adminPort)
	checkProbe(t, where+" readiness", c.ReadinessProbe, "/readyz", ports, adminPort)
	if c.StartupProbe != nil {
		checkProbe(t, where+" startup", c.StartupProbe, "/healthz", ports, adminPort)
	}

	checkRestricted(t, where, c.SecurityContext, spec.SecurityContext)

	// The HMAC key and the admin publish token come from Secrets, never from the ConfigMap.
	checkSecretEnv(t, where, *c, "WSGATE_AUTH_HMAC_SECRET", want.secretName, want.secretKey)
	checkSecretEnv(t, where, *c, "WSGATE_ADMIN_PUBLISH_TOKEN", want.publishName, want.publishKey)

	// Shutdown: the kubelet waits longer than preStop sleep + shutdown_grace.
	var sleep int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if c.Lifecycle.PreStop.Exec != nil {
			t.Errorf("%s: preStop exec needs a shell; the distroless image has none", where)
		}
		if c.Lifecycle.PreStop.Sleep != nil {
			sleep = c.Lifecycle.PreStop.Sleep.Seconds
		}
	}
	if sleep != want.preStop {
		t.Errorf("%s: preStop sleep %ds, want %ds", where, sleep, want.preStop)
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatalf("%s: terminationGracePeriodSeconds unset (default 30s)", where)
	}
	grace := *spec.TerminationGracePeriodSeconds
	floor := int64(math.Ceil(cfg.shutdownGrace(t).Seconds())) + sleep
	if grace <= floor {
		t.Errorf("%s: terminationGracePeriodSeconds %d must exceed shutdown_grace + preStop sleep (%d)", where, grace, floor)
	}
	if grace != want.grace {
		t.Errorf("%s: terminationGracePeriodSeconds %d, want %d", where, grace, want.grace)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false (wsgate never calls the API server)", where)
	}
	return cfg, text, *c
}

// checkSecretEnv asserts that container c has exactly one env var name, read from Secret secret's
// key, or (secret empty) none at all.
func checkSecretEnv(t *testing.T, where string, c corev1.Container, name, secret, key string) {
	t.Helper()
	var found []corev1.EnvVar
	for _, e := range c.Env {
		if e.Name == name {
			found = append(found, e)
		}
	}
	switch {
	case secret == "" && len(found) != 0:
		t.Errorf("%s: container %s: unexpected %s env", where, c.Name, name)
	case secret == "":
	case len(found) != 1:
		t.Errorf("%s: container %s: %d %s env vars, want exactly one", where, c.Name, len(found), name)
	case found[0].Value != "" || found[0].ValueFrom == nil || found[0].ValueFrom.SecretKeyRef == nil:
		t.Errorf("%s: container %s: %s must come from a secretKeyRef, not a literal", where, c.Name, name)
	default:
		ref := found[0].ValueFrom.SecretKeyRef
		if ref.Name != secret || ref.Key != key {
			t.Errorf("%s: container %s: %s from Secret %s key %s, want %s key %s", where, c.Name, name, ref.Name, ref.Key, secret, key)
		}
		if ref.Optional != nil && *ref.Optional {
			t.Errorf("%s: container %s: %s secretKeyRef is optional; a missing Secret must stop the pod, not start it open", where, c.Name, name)
		}
	}
}

// checkPublishURL asserts that a producer container next to wsgate has WSGATE_PUBLISH_URL pointing
// at POST /publish on wsgate's admin port over loopback.
func checkPublishURL(t *testing.T, where string, producer, wsgate corev1.Container) {
	t.Helper()
	var admin int32
	for _, p := range wsgate.Ports {
		if p.Name == "admin" {
			admin = p.ContainerPort
		}
	}
	want := fmt.Sprintf("http://127.0.0.1:%d/publish", admin)
	for _, e := range producer.Env {
		if e.Name == "WSGATE_PUBLISH_URL" {
			if e.Value != want {
				t.Errorf("%s: WSGATE_PUBLISH_URL %q, want %q", where, e.Value, want)
			}
			return
		}
	}
	t.Errorf("%s: no WSGATE_PUBLISH_URL env (want %q)", where, want)
}

func checkProbe(t *testing.T, where string, p *corev1.Probe, path string, ports map[string]int32, adminPort int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe on %s", where, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %q, want %q", where, p.HTTPGet.Path, path)
	}
	var port int32
	switch p.HTTPGet.Port.Type {
	case intstr.String:
		n, ok := ports[p.HTTPGet.Port.StrVal]
		if !ok {
			t.Errorf("%s: port %q is not a named port of the container (%v)", where, p.HTTPGet.Port.StrVal, ports)
			return
		}
		port = n
	default:
		port = p.HTTPGet.Port.IntVal
	}
	if port != adminPort {
		t.Errorf("%s: probes port %d, want the admin port %d", where, port, adminPort)
	}
}

// checkRestricted asserts the Pod Security "restricted" profile for one container.
func checkRestricted(t *testing.T, where string, sc *corev1.SecurityContext, pod *corev1.PodSecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("%s: no container securityContext", where)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: runAsNonRoot must be true", where)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != wsgateUID {
		t.Errorf("%s: runAsUser %v, want %d", where, sc.RunAsUser, wsgateUID)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: capabilities %+v, want drop [ALL] and no add", where, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && pod != nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", where, seccomp)
	}
}

// checkSelects asserts that selector is non-empty and every pair of it is in labels.
func checkSelects(t *testing.T, where string, selector, labels map[string]string) {
	t.Helper()
	if len(selector) == 0 {
		t.Errorf("%s: empty selector selects everything", where)
	}
	for k, v := range selector {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match pod labels %v", where, k, v, labels)
		}
	}
}
