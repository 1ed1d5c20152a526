package deploycheck

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizeBuild runs kustomize (the library kubectl embeds) on a directory.
func kustomizeBuild(t *testing.T, dir string) manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	return decodeManifests(t, dir, out)
}

// TestDeployFiles decodes every file under deploy/ on its own: kustomization.yaml strictly into
// kustomize's type, configMapGenerator inputs as wsgate configs (and through wsgate validate),
// everything else as Kubernetes objects (native kinds strictly, CRDs with apiVersion/kind/name).
func TestDeployFiles(t *testing.T) {
	deploy := filepath.Join(repoRoot(t), "deploy")
	configs := map[string]bool{}
	var others []string
	err := filepath.WalkDir(deploy, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		if traefikStatic[filepath.ToSlash(p[len(deploy)+1:])] {
			return nil // Traefik's static configuration, not a Kubernetes object: TestTraefikStatic
		}
		if filepath.Base(p) != "kustomization.yaml" {
			others = append(others, p)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		js, err := yaml.YAMLToJSONStrict(data)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		var k kusttypes.Kustomization
		if err := strictUnmarshal(js, &k); err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.FileSources {
				if i := strings.IndexByte(f, '='); i >= 0 {
					f = f[i+1:]
				}
				configs[filepath.Join(filepath.Dir(p), f)] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(configs) == 0 {
		t.Fatal("no configMapGenerator file found under deploy/")
	}
	for _, p := range others {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(deploy, p)
		if configs[p] {
			parseConfig(t, rel, string(data))
			validateConfig(t, rel, string(data), true)
			continue
		}
		if len(decodeManifests(t, rel, data)) == 0 {
			t.Errorf("%s holds no object", rel)
		}
	}
}

// TestKustomizeBase: the sidecar pattern next to the example AI service.
func TestKustomizeBase(t *testing.T) {
	ms := kustomizeBuild(t, filepath.Join(repoRoot(t), "deploy", "base"))
	checkBase(t, ms)
}

// checkBase asserts the objects deploy/base contributes to every overlay.
func checkBase(t *testing.T, ms manifests) *corev1.Service {
	t.Helper()
	dep := ms.named(t, "Deployment", "ai-service").Typed.(*appsv1.Deployment)
	spec := dep.Spec.Template.Spec
	cfg, text, c := checkWsgatePod(t, "ai-service", ms, spec, podWant{
		secretName: "ai-service-jwt", secretKey: "hmac", native: true, grace: 35, preStop: 5,
		publishName: "ai-service-publish-token", publishKey: "publish-token",
	})
	checkSelects(t, "Deployment selector", dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", dep.Spec.Replicas)
	}
	if *dep.Spec.Replicas > 1 && cfg.hasBridgeRoutes() && cfg.Redis.URL == "" {
		t.Errorf("%d replicas with bridge routes need redis.url", *dep.Spec.Replicas)
	}
	var app *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "app" {
			app = &spec.Containers[i]
		}
	}
	if app == nil {
		t.Fatal("no app container next to wsgate")
	}
	// The app publishes through wsgate's admin port with the token wsgate reads. The Secret is
	// created by hand, like ai-service-jwt (kustomization.yaml shows the command).
	checkSecretEnv(t, "ai-service app", *app, "WSGATE_PUBLISH_TOKEN", "ai-service-publish-token", "publish-token")
	checkPublishURL(t, "ai-service app", *app, c)
	if ms.count("Secret") != 0 {
		t.Errorf("deploy/base renders a Secret; its Secrets are created by hand, outside git")
	}
	for _, r := range cfg.Routes {
		if r.Upstream != "" && !strings.HasPrefix(r.Upstream, "ws://127.0.0.1:") {
			t.Errorf("route %s: sidecar upstream %q should be on localhost", r.Path, r.Upstream)
		}
	}
	if !strings.HasPrefix(spec.Volumes[0].ConfigMap.Name, "ai-service-wsgate-") {
		t.Errorf("config volume %q is not the hash-suffixed generated ConfigMap", spec.Volumes[0].ConfigMap.Name)
	}

	svc := ms.named(t, "Service", "ai-service").Typed.(*corev1.Service)
	checkSelects(t, "Service selector", svc.Spec.Selector, dep.Spec.Template.Labels)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "http" || svc.Spec.Ports[0].TargetPort.IntValue() != int(c.Ports[0].ContainerPort) {
		t.Errorf("Service ports %+v, want only http -> wsgate's public port %d", svc.Spec.Ports, c.Ports[0].ContainerPort)
	}
	pdb := ms.named(t, "PodDisruptionBudget", "ai-service").Typed.(*policyv1.PodDisruptionBudget)
	checkSelects(t, "PDB selector", pdb.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	validateConfigEnv(t, "deploy/base ConfigMap", text,
		"WSGATE_AUTH_HMAC_SECRET="+testHMACKey, "WSGATE_ADMIN_PUBLISH_TOKEN="+testPublishToken)
	return svc
}

func servicePort(t *testing.T, svc *corev1.Service, nameOrNumber string) corev1.ServicePort {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Name == nameOrNumber || strconv.Itoa(int(p.Port)) == nameOrNumber {
			return p
		}
	}
	t.Fatalf("Service %s has no port %q", svc.Name, nameOrNumber)
	return corev1.ServicePort{}
}

// wsgateHeartbeat is the longest silence wsgate allows a healthy socket (interval + timeout);
// gateway timeouts must be longer.
func wsgateHeartbeat(t *testing.T, ms manifests) time.Duration {
	t.Helper()
	for _, o := range ms.all("ConfigMap") {
		cm := o.Typed.(*corev1.ConfigMap)
		if text, ok := cm.Data["config.yaml"]; ok {
			cfg := parseConfig(t, cm.Name, text)
			iv, err1 := time.ParseDuration(cfg.Heartbeat.Interval)
			to, err2 := time.ParseDuration(cfg.Heartbeat.Timeout)
			if err1 != nil || err2 != nil {
				t.Fatalf("heartbeat %+v: %v %v", cfg.Heartbeat, err1, err2)
			}
			return iv + to
		}
	}
	t.Fatal("no wsgate ConfigMap")
	return 0
}

func TestKustomizeTraefik(t *testing.T) {
	ms := kustomizeBuild(t, filepath.Join(repoRoot(t), "deploy", "traefik"))
	svc := checkBase(t, ms)

	middlewares := map[string]bool{}
	for _, o := range ms.all("Middleware") {
		middlewares[o.Name] = true
	}
	ir := ms.named(t, "IngressRoute", "ai-service-ws")
	if match := fieldString(t, ir, "spec", "routes", 0, "match"); !strings.Contains(match, "PathPrefix(`/ws/`)") {
		t.Errorf("IngressRoute match %q does not route /ws/", match)
	}
	if got := fieldString(t, ir, "spec", "routes", 0, "services", 0, "name"); got != svc.Name {
		t.Errorf("IngressRoute service %q, want %q", got, svc.Name)
	}
	servicePort(t, svc, fieldString(t, ir, "spec", "routes", 0, "services", 0, "port"))
	for i := 0; ; i++ {
		name, ok := field(ir.Fields, "spec", "routes", 0, "middlewares", i, "name")
		if !ok {
			break
		}
		if !middlewares[name.(string)] {
			t.Errorf("IngressRoute uses missing Middleware %q", name)
		}
	}
	// The transport bounds the handshake, not the upgraded socket (make test-gateway shows that
	// against a real Traefik): wsgate's own handshake_timeout must fire first, so the client gets
	// wsgate's status and reason rather than Traefik's 504.
	st := ms.named(t, "ServersTransport", fieldString(t, ir, "spec", "routes", 0, "services", 0, "serversTransport"))
	rh, err := time.ParseDuration(fieldString(t, st, "spec", "forwardingTimeouts", "responseHeaderTimeout"))
	if hs := wsgateHandshakeTimeout(t, ms); err != nil || rh <= hs {
		t.Errorf("ServersTransport responseHeaderTimeout %v (%v), want above wsgate's handshake_timeout %v", rh, err, hs)
	}

	// inFlightReq without a sourceCriterion counts per Host header (everyone together); depth 1
	// reads an X-Forwarded-For hop that is empty when Traefik is the edge (docs/deploy.md).
	inflight := ms.named(t, "Middleware", "wsgate-inflight")
	if depth, ok := field(inflight.Fields, "spec", "inFlightReq", "sourceCriterion", "ipStrategy", "depth"); !ok || depth != float64(0) {
		t.Errorf("wsgate-inflight ipStrategy.depth %v, want 0 (the peer's address at the edge)", depth)
	}

	// ForwardAuth to wsgate's /auth/verify on the public port, passing identity headers on.
	fa := ms.named(t, "Middleware", "wsgate-forwardauth")
	addr := fieldString(t, fa, "spec", "forwardAuth", "address")
	if !strings.HasPrefix(addr, "http://"+svc.Name+".") || !strings.HasSuffix(addr, ":"+strconv.Itoa(int(servicePort(t, svc, "http").Port))+"/auth/verify") {
		t.Errorf("forwardAuth address %q, want http://%s.<ns>...:<http port>/auth/verify", addr, svc.Name)
	}
	headers, _ := field(fa.Fields, "spec", "forwardAuth", "authResponseHeaders")
	if got := strings.Join(toStrings(headers), ","); got != "X-User-Id,X-Tenant-Id" {
		t.Errorf("authResponseHeaders %q, want X-User-Id,X-Tenant-Id", got)
	}
	if trust, _ := field(fa.Fields, "spec", "forwardAuth", "trustForwardHeader"); trust != false {
		t.Errorf("trustForwardHeader %v, want false", trust)
	}
}

func TestKustomizeKong(t *testing.T) {
	ms := kustomizeBuild(t, filepath.Join(repoRoot(t), "deploy", "kong"))
	svc := checkBase(t, ms)
	heartbeat := wsgateHeartbeat(t, ms)

	for _, a := range []string{"konghq.com/read-timeout", "konghq.com/write-timeout"} {
		ms, err := strconv.Atoi(svc.Annotations[a])
		if d := time.Duration(ms) * time.Millisecond; err != nil || d < time.Hour || d <= heartbeat {
			t.Errorf("Service annotation %s=%q, want >= 3600000 ms and above the heartbeat %v", a, svc.Annotations[a], heartbeat)
		}
	}
	ing := ms.named(t, "Ingress", "ai-service-ws").Typed.(*networkingv1.Ingress)
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "kong" {
		t.Errorf("ingressClassName %v, want kong", ing.Spec.IngressClassName)
	}
	path := ing.Spec.Rules[0].HTTP.Paths[0]
	if path.Path != "/ws/" || path.PathType == nil || *path.PathType != networkingv1.PathTypePrefix {
		t.Errorf("Ingress path %q %v, want /ws/ Prefix", path.Path, path.PathType)
	}
	if path.Backend.Service == nil || path.Backend.Service.Name != svc.Name {
		t.Fatalf("Ingress backend %+v, want Service %s", path.Backend, svc.Name)
	}
	servicePort(t, svc, path.Backend.Service.Port.Name)
	plugins := map[string]bool{}
	for _, o := range ms.all("KongPlugin") {
		plugins[o.Name] = true
		if p, _ := field(o.Fields, "plugin"); p == nil || p == "" {
			t.Errorf("KongPlugin %s names no plugin", o.Name)
		}
	}
	for _, p := range strings.Split(ing.Annotations["konghq.com/plugins"], ",") {
		if !plugins[strings.TrimSpace(p)] {
			t.Errorf("Ingress uses missing KongPlugin %q", p)
		}
	}
	// Kong's counterpart of Traefik's per-client budgets: the handshake limit keys on the client
	// address (Kong at the edge: the peer), never on a header or a single shared bucket.
	rl := ms.named(t, "KongPlugin", "wsgate-rate-limit")
	if got := fieldString(t, rl, "config", "limit_by"); got != "ip" {
		t.Errorf("rate-limiting limit_by %q, want ip", got)
	}
	// The logging plugin must not serialize the request object (request.url / request.querystring carry ?token=).
	logp := ms.named(t, "KongPlugin", "wsgate-file-log")
	if got := fieldString(t, logp, "config", "custom_fields_by_lua", "request"); got != "return nil" {
		t.Errorf("file-log custom_fields_by_lua.request %q, want \"return nil\"", got)
	}
}

// TestAccessLogNotes pins the token-in-access-log guidance where operators will look for it.
func TestAccessLogNotes(t *testing.T) {
	root := repoRoot(t)
	cases := map[string][]string{
		"deploy/traefik/kustomization.yaml": {"traefik.yaml", "aliasHeadersStrategy: delete", "RequestPath: drop"},
		"deploy/kong/kustomization.yaml":    {"nginx_http_log_format", "proxy_access_log: /dev/stdout wsgate_redacted", "$uri"},
		"docs/deploy.md":                    {"RequestPath: drop", "aliasHeadersStrategy: delete", "X-Forwarded-Proto: wss", "KONG_PROXY_ACCESS_LOG", "KONG_NGINX_HTTP_LOG_FORMAT"},
		"charts/wsgate/templates/NOTES.txt": {"RequestPath: drop", "KONG_NGINX_HTTP_LOG_FORMAT"},
	}
	for file, wants := range cases {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(string(data), w) {
				t.Errorf("%s does not mention %q", file, w)
			}
		}
		if strings.Contains(file, "kong") && strings.Contains(string(data), `"$request"`) {
			t.Errorf("%s: a Kong log format with $request logs the query string", file)
		}
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// traefikStatic lists the files under deploy/ that are Traefik static configuration.
var traefikStatic = map[string]bool{"traefik/traefik.yaml": true}

// TestTraefikStatic: the three static settings wsgate relies on (make test-gateway runs a real
// Traefik with this file). readTimeout is left out: it does not reach an upgraded WebSocket.
func TestTraefikStatic(t *testing.T) {
	for rel := range traefikStatic {
		data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", rel))
		if err != nil {
			t.Fatal(err)
		}
		var st map[string]any
		if err := yaml.UnmarshalStrict(data, &st); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		for path, want := range map[string]any{
			"entryPoints.websecure.http.aliasHeadersStrategy": "delete",
			"accessLog.fields.names.RequestPath":              "drop",
			"accessLog.fields.headers.names.Authorization":    "drop",
		} {
			var keys []any
			for _, k := range strings.Split(path, ".") {
				keys = append(keys, k)
			}
			if got, _ := field(st, keys...); got != want {
				t.Errorf("%s: %s = %v, want %v", rel, path, got, want)
			}
		}
		if _, ok := field(st, "entryPoints", "websecure", "transport", "respondingTimeouts", "readTimeout"); ok {
			t.Errorf("%s sets readTimeout; it does not apply to upgraded WebSockets (docs/deploy.md)", rel)
		}
	}
}

// wsgateHandshakeTimeout is limits.handshake_timeout of the manifests' wsgate config, or its default.
func wsgateHandshakeTimeout(t *testing.T, ms manifests) time.Duration {
	t.Helper()
	for _, o := range ms.all("ConfigMap") {
		cm := o.Typed.(*corev1.ConfigMap)
		text, ok := cm.Data["config.yaml"]
		if !ok {
			continue
		}
		var cfg struct {
			Limits struct {
				HandshakeTimeout string `json:"handshake_timeout"`
			} `json:"limits"`
		}
		if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
			t.Fatalf("%s: %v", cm.Name, err)
		}
		if cfg.Limits.HandshakeTimeout == "" {
			return 15 * time.Second // proxy.DefaultHandshakeTimeout; this module does not import wsgate
		}
		d, err := time.ParseDuration(cfg.Limits.HandshakeTimeout)
		if err != nil {
			t.Fatalf("%s: limits.handshake_timeout: %v", cm.Name, err)
		}
		return d
	}
	t.Fatal("no wsgate ConfigMap")
	return 0
}
