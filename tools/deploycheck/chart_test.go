package deploycheck

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

const release = "demo"

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "charts", "wsgate") }

func TestChartLint(t *testing.T) {
	dir := chartDir(t)
	if out, err := helm(t, "lint", "--strict", dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ci", "*-values.yaml"))
	for _, f := range files {
		if out, err := helm(t, "lint", "--strict", dir, "-f", f, "--kube-version", kubeVersion); err != nil {
			t.Errorf("%s: %v\n%s", filepath.Base(f), err, out)
		}
	}
}

// ciCase is what one charts/wsgate/ci/*-values.yaml must render to.
type ciCase struct {
	kinds      []string // every kind rendered, sorted; HPA/PDB/ServiceMonitor only where wanted
	secretName string   // Secret the pod reads the HMAC key from
	secretKey  string
	createsSec bool  // the chart renders that Secret itself
	grace      int64 // exact terminationGracePeriodSeconds
	replicas   *int32
	bridge     bool // config has subscribe/publish routes
	// publishName/publishKey: Secret the pod reads the admin publish token from.
	publishName string
	publishKey  string
	// publishMade: the chart renders that Secret with a generated token.
	publishMade bool
}

// The publish token Secret the chart generates when neither value nor existingSecret is set.
const (
	defaultPublishName = release + "-wsgate-publish-token"
	defaultPublishKey  = "publish-token"
)

func int32p(v int32) *int32 { return &v }

var ciCases = map[string]ciCase{
	"standalone-values.yaml": {
		kinds:      []string{"ConfigMap", "Deployment", "NetworkPolicy", "Pod", "Secret", "Secret", "Service", "ServiceAccount"},
		secretName: release + "-wsgate-hmac", secretKey: "hmac-secret", createsSec: true,
		grace: 35, replicas: int32p(1), bridge: true,
		publishName: defaultPublishName, publishKey: defaultPublishKey, publishMade: true,
	},
	"ha-values.yaml": {
		kinds:      []string{"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Pod", "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor"},
		secretName: "wsgate-hmac", secretKey: "hmac-secret",
		grace: 50, replicas: nil, bridge: true,
		publishName: "wsgate-publish-token", publishKey: defaultPublishKey,
	},
	"sidecar-values.yaml": {
		kinds:       []string{"ConfigMap", "Secret"},
		publishName: defaultPublishName, publishKey: defaultPublishKey, publishMade: true,
	},
}

// TestChartCIValues renders every ci/*-values.yaml and asserts the objects users rely on.
func TestChartCIValues(t *testing.T) {
	dir := chartDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "ci", "*-values.yaml"))
	seen := map[string]bool{}
	for _, f := range files {
		seen[filepath.Base(f)] = true
	}
	for name := range ciCases {
		if !seen[name] {
			t.Errorf("ci/%s is missing", name)
		}
	}
	for _, f := range files {
		name := filepath.Base(f)
		tc, ok := ciCases[name]
		if !ok {
			t.Errorf("ci/%s has no expectations in ciCases", name)
			continue
		}
		t.Run(strings.TrimSuffix(name, "-values.yaml"), func(t *testing.T) {
			out, err := render(t, release, dir, "-f", f)
			if err != nil {
				t.Fatal(err)
			}
			ms := decodeManifests(t, name, []byte(out))
			if got := fmt.Sprint(ms.kinds()); got != fmt.Sprint(tc.kinds) {
				t.Errorf("kinds %s, want %s", got, tc.kinds)
			}
			checkChartLabels(t, ms)
			cm := ms.one(t, "ConfigMap").Typed.(*corev1.ConfigMap)
			cfg := parseConfig(t, name, cm.Data["config.yaml"])
			if cfg.hasBridgeRoutes() != tc.bridge && ms.count("Deployment") > 0 {
				t.Errorf("bridge routes %v, want %v", cfg.hasBridgeRoutes(), tc.bridge)
			}
			// The publish token the pod would read: the generated one, or a stand-in for an existingSecret.
			token := testPublishToken
			if tc.publishMade {
				token = checkPublishSecret(t, ms, tc.publishName, tc.publishKey, true)
			} else if tc.publishName != "" {
				ms.noneNamed(t, "Secret", tc.publishName)
			}
			validateConfigEnv(t, name, cm.Data["config.yaml"],
				"WSGATE_AUTH_HMAC_SECRET="+testHMACKey, "WSGATE_ADMIN_PUBLISH_TOKEN="+token)
			if ms.count("Deployment") == 0 {
				return
			}
			checkStandalone(t, ms, cfg, cm.Data["config.yaml"], tc)
		})
	}
}

// checkChartLabels: every object carries the standard labels (the test hook Pod has no
// app.kubernetes.io/name on purpose, so the Service cannot select it).
func checkChartLabels(t *testing.T, ms manifests) {
	t.Helper()
	for _, o := range ms {
		want := []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"}
		if o.Kind == "Pod" {
			want = []string{"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"}
			if _, ok := o.Labels["app.kubernetes.io/name"]; ok {
				t.Errorf("test Pod %s must not carry app.kubernetes.io/name", o.Name)
			}
		}
		for _, k := range want {
			if o.Labels[k] == "" {
				t.Errorf("%s %s: label %s missing", o.Kind, o.Name, k)
			}
		}
		if o.Labels["app.kubernetes.io/instance"] != "" && o.Labels["app.kubernetes.io/instance"] != release {
			t.Errorf("%s %s: instance label %q, want %q", o.Kind, o.Name, o.Labels["app.kubernetes.io/instance"], release)
		}
	}
}

func checkStandalone(t *testing.T, ms manifests, cfg wsgateConfig, configText string, tc ciCase) {
	t.Helper()
	fullname := release + "-wsgate"
	selector := map[string]string{"app.kubernetes.io/name": "wsgate", "app.kubernetes.io/instance": release}

	dep := ms.named(t, "Deployment", fullname).Typed.(*appsv1.Deployment)
	if fmt.Sprint(dep.Spec.Selector.MatchLabels) != fmt.Sprint(selector) {
		t.Errorf("Deployment selector %v, want exactly %v", dep.Spec.Selector.MatchLabels, selector)
	}
	podLabels := dep.Spec.Template.Labels
	checkSelects(t, "Deployment selector", dep.Spec.Selector.MatchLabels, podLabels)
	switch {
	case tc.replicas == nil && dep.Spec.Replicas != nil:
		t.Errorf("Deployment sets replicas %d although the HPA owns them", *dep.Spec.Replicas)
	case tc.replicas != nil && (dep.Spec.Replicas == nil || *dep.Spec.Replicas != *tc.replicas):
		t.Errorf("Deployment replicas %v, want %d", dep.Spec.Replicas, *tc.replicas)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update must keep maxUnavailable 0 (new pods ready before old ones drain)")
	}

	spec := dep.Spec.Template.Spec
	_, _, c := checkWsgatePod(t, "Deployment", ms, spec, podWant{
		secretName: tc.secretName, secretKey: tc.secretKey, grace: tc.grace, preStop: 5,
		publishName: tc.publishName, publishKey: tc.publishKey,
	})
	if spec.ServiceAccountName != fullname {
		t.Errorf("serviceAccountName %q, want %q", spec.ServiceAccountName, fullname)
	}
	ms.named(t, "ServiceAccount", fullname)

	// Config checksum: present, hex, and (without a chart-managed key) the hash of the config text;
	// a generated publish token stays out of it.
	sum := dep.Spec.Template.Annotations["checksum/config"]
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
		t.Errorf("checksum/config annotation %q, want a sha256 hex digest", sum)
	}
	if !tc.createsSec {
		h := sha256.Sum256([]byte(strings.TrimSuffix(configText, "\n")))
		if want := hex.EncodeToString(h[:]); sum != want {
			t.Errorf("checksum/config %s, want sha256 of config.yaml %s", sum, want)
		}
	}

	// The HMAC Secret, when the chart makes it, is the one the env var names.
	if tc.createsSec {
		sec := ms.named(t, "Secret", tc.secretName).Typed.(*corev1.Secret)
		if len(sec.Data[tc.secretKey]) < 32 {
			t.Errorf("Secret %s key %s holds %d bytes, want >= 32", sec.Name, tc.secretKey, len(sec.Data[tc.secretKey]))
		}
	} else {
		ms.noneNamed(t, "Secret", tc.secretName)
	}

	// Service: selects the pods; both ports exist on the container.
	svc := ms.named(t, "Service", fullname).Typed.(*corev1.Service)
	if fmt.Sprint(svc.Spec.Selector) != fmt.Sprint(selector) {
		t.Errorf("Service selector %v, want %v", svc.Spec.Selector, selector)
	}
	checkSelects(t, "Service selector", svc.Spec.Selector, podLabels)
	containerPorts := map[string]int32{}
	for _, p := range c.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	svcPorts := map[string]int32{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p.Port
		if _, ok := containerPorts[p.TargetPort.StrVal]; !ok {
			t.Errorf("Service port %s targets %q, not a container port name (%v)", p.Name, p.TargetPort.String(), containerPorts)
		}
	}
	if svcPorts["http"] != 8080 || svcPorts["admin"] != 9090 {
		t.Errorf("Service ports %v, want http=8080 admin=9090", svcPorts)
	}

	// helm test: wsgate probe against the Service's admin port.
	pod := ms.one(t, "Pod").Typed.(*corev1.Pod)
	if pod.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("test Pod hook annotation %q, want test", pod.Annotations["helm.sh/hook"])
	}
	if got, want := fmt.Sprint(pod.Spec.Containers[0].Args), fmt.Sprintf("[probe --addr %s:%d /readyz]", fullname, svcPorts["admin"]); got != want {
		t.Errorf("test Pod args %s, want %s", got, want)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test Pod restartPolicy %q, want Never", pod.Spec.RestartPolicy)
	}
	checkRestricted(t, "test Pod", pod.Spec.Containers[0].SecurityContext, pod.Spec.SecurityContext)
	for k, v := range selector {
		if pod.Labels[k] == v && k == "app.kubernetes.io/name" {
			t.Errorf("Service selector matches the test Pod")
		}
	}

	if tc.replicas == nil { // ha
		if cfg.Redis.URL == "" {
			t.Errorf("ha config without redis.url")
		}
		hpa := ms.one(t, "HorizontalPodAutoscaler").Typed.(*autoscalingv2.HorizontalPodAutoscaler)
		if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != fullname {
			t.Errorf("HPA targets %s/%s, want Deployment/%s", hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name, fullname)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != 3 || hpa.Spec.MaxReplicas != 12 {
			t.Errorf("HPA min %v max %d, want 3..12", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
		}
		if b := hpa.Spec.Behavior; b == nil || b.ScaleDown == nil || len(b.ScaleDown.Policies) == 0 || b.ScaleDown.Policies[0].Value != 1 {
			t.Errorf("HPA scale-down must remove one pod at a time (sockets close on scale-down)")
		}
		pdb := ms.one(t, "PodDisruptionBudget").Typed.(*policyv1.PodDisruptionBudget)
		if fmt.Sprint(pdb.Spec.Selector.MatchLabels) != fmt.Sprint(selector) {
			t.Errorf("PDB selector %v, want %v", pdb.Spec.Selector.MatchLabels, selector)
		}
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
			t.Errorf("PDB maxUnavailable %v minAvailable %v, want maxUnavailable 1 only", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
		}
		sm := ms.one(t, "ServiceMonitor")
		if got := fieldString(t, sm, "spec", "endpoints", 0, "port"); got != "admin" {
			t.Errorf("ServiceMonitor port %q, want admin", got)
		}
		if got := fieldString(t, sm, "spec", "endpoints", 0, "path"); got != "/metrics" {
			t.Errorf("ServiceMonitor path %q, want /metrics", got)
		}
		for k, v := range selector {
			if got := fieldString(t, sm, "spec", "selector", "matchLabels", k); got != v || svc.Labels[k] != v {
				t.Errorf("ServiceMonitor selector %s=%s does not select the Service (labels %v)", k, got, svc.Labels)
			}
		}
	}

	if ms.count("NetworkPolicy") == 1 {
		np := ms.one(t, "NetworkPolicy").Typed.(*networkingv1.NetworkPolicy)
		checkSelects(t, "NetworkPolicy", np.Spec.PodSelector.MatchLabels, podLabels)
		var ports []string
		for _, r := range np.Spec.Ingress {
			for _, p := range r.Ports {
				ports = append(ports, p.Port.String())
				if _, ok := containerPorts[p.Port.String()]; !ok {
					t.Errorf("NetworkPolicy port %s is not a container port", p.Port.String())
				}
			}
		}
		sort.Strings(ports)
		if fmt.Sprint(ports) != "[admin http]" {
			t.Errorf("NetworkPolicy ports %v, want [admin http]", ports)
		}
	}
}

// checkPublishSecret asserts the Secret the chart renders for the admin publish token and returns
// the token. generated: the chart made the token up (randAlphaNum 32).
func checkPublishSecret(t *testing.T, ms manifests, name, key string, generated bool) string {
	t.Helper()
	sec := ms.named(t, "Secret", name).Typed.(*corev1.Secret)
	if sec.Type != corev1.SecretTypeOpaque {
		t.Errorf("Secret %s type %q, want Opaque", name, sec.Type)
	}
	if len(sec.Data) != 1 || len(sec.StringData) != 0 {
		t.Errorf("Secret %s holds keys %v, want only %s", name, sortedKeys(sec.Data), key)
	}
	token := string(sec.Data[key])
	if len(token) < 16 {
		t.Errorf("Secret %s key %s holds %d bytes, want >= 16 (wsgate refuses a shorter admin.publish_token)", name, key, len(token))
	}
	if generated && !regexp.MustCompile(`^[A-Za-z0-9]{32}$`).MatchString(token) {
		t.Errorf("Secret %s key %s: generated token is not 32 alphanumerics (%d bytes)", name, key, len(token))
	}
	return token
}

// noneNamed fails the test when the manifests hold an object of that kind and name.
func (m manifests) noneNamed(t *testing.T, kind, name string) {
	t.Helper()
	for _, o := range m {
		if o.Kind == kind && o.Name == name {
			t.Errorf("unexpected %s %s: it is an existing Secret or turned off, so the chart must not render it", kind, name)
		}
	}
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestChartChecksumFollowsConfig: the same values give the same checksum; a config change gives a new one.
func TestChartChecksumFollowsConfig(t *testing.T) {
	dir := chartDir(t)
	sumOf := func(args ...string) string {
		out, err := render(t, release, dir, args...)
		if err != nil {
			t.Fatal(err)
		}
		dep := decodeManifests(t, "checksum", []byte(out)).one(t, "Deployment").Typed.(*appsv1.Deployment)
		return dep.Spec.Template.Annotations["checksum/config"]
	}
	a, b := sumOf(), sumOf()
	if a == "" || a != b {
		t.Fatalf("checksum not stable: %q vs %q", a, b)
	}
	if c := sumOf("--set", "config.log_level=debug"); c == a {
		t.Errorf("checksum unchanged after a config change")
	}
	// A token given as a value rolls the pods when it changes, like hmacSecret.value.
	v1 := sumOf("--set", "publishToken.value="+testPublishToken)
	v2 := sumOf("--set", "publishToken.value="+testPublishToken+"-rotated")
	if v1 == a || v1 == v2 {
		t.Errorf("checksum does not follow publishToken.value (default %s, value %s, rotated %s)", a, v1, v2)
	}
}

// TestChartPublishTokenGenerated: with neither value nor existingSecret the chart generates the
// token. Offline (helm template) there is no live Secret to look up, so every render holds a new
// random token; the checksum must not follow it, or each `helm template`-based sync would restart
// every pod and cut its sockets. (Upgrades keep the token through lookup of the live Secret.)
func TestChartPublishTokenGenerated(t *testing.T) {
	dir := chartDir(t)
	renderOnce := func() (string, string) {
		out, err := render(t, release, dir)
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "generated", []byte(out))
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		checkWsgatePod(t, "generated Deployment", ms, dep.Spec.Template.Spec, podWant{
			secretName: release + "-wsgate-hmac", secretKey: "hmac-secret", grace: 35, preStop: 5,
			publishName: defaultPublishName, publishKey: defaultPublishKey,
		})
		return checkPublishSecret(t, ms, defaultPublishName, defaultPublishKey, true), dep.Spec.Template.Annotations["checksum/config"]
	}
	tok1, sum1 := renderOnce()
	tok2, sum2 := renderOnce()
	if tok1 == tok2 {
		t.Errorf("two offline renders gave the same generated token: not random")
	}
	if sum1 != sum2 {
		t.Errorf("checksum/config follows the generated token (%s vs %s)", sum1, sum2)
	}
}

// TestChartRejectsBadValues: values that would give a broken or unsafe install fail helm template.
func TestChartRejectsBadValues(t *testing.T) {
	dir := chartDir(t)
	standalone := filepath.Join(dir, "ci", "standalone-values.yaml")
	valuesFile := func(body string) string {
		p := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]struct {
		args    []string
		wantErr string
	}{
		"replicaCount not a number": {[]string{"--set", "replicaCount=lots"}, "/replicaCount"},
		"no routes":                 {[]string{"-f", valuesFile("config:\n  routes: []\n")}, "/config/routes"},
		"routes null":               {[]string{"--set", "config.routes=null"}, "routes"},
		"route without target": {
			[]string{"-f", valuesFile("config:\n  routes:\n    - path: /ws/chat\n")}, "/config/routes/0",
		},
		"unknown config key":  {[]string{"--set", "config.listn=:8080"}, "listn"},
		"unknown values key":  {[]string{"--set", "replicas=3"}, "replicas"},
		"bad mode":            {[]string{"--set", "mode=daemonset"}, "/mode"},
		"bad duration":        {[]string{"--set", "config.shutdown_grace=soon"}, "/config/shutdown_grace"},
		"secret in config":    {[]string{"--set", "config.auth.hmac_secret=0123456789abcdef0123456789abcdef"}, "hmac_secret"},
		"short hmac key":      {[]string{"--set", "hmacSecret.value=short"}, "/hmacSecret/value"},
		"no verification key": {[]string{"--set", "hmacSecret.enabled=false"}, "no verification key"},
		"value and existing":  {[]string{"--set", "hmacSecret.value=" + testHMACKey, "--set", "hmacSecret.existingSecret=x"}, "not both"},
		"replicas without redis": {
			[]string{"-f", standalone, "--set", "replicaCount=3"}, "config.redis.url is required",
		},
		"autoscaling without redis": {
			[]string{"-f", standalone, "--set", "autoscaling.enabled=true"}, "config.redis.url is required",
		},
		"grace shorter than shutdown": {
			[]string{"--set", "terminationGracePeriodSeconds=30"}, "must exceed config.shutdown_grace + preStopSleepSeconds (30)",
		},
		"listen without port": {[]string{"--set", "config.listen=localhost"}, "/config/listen"},
		"publish token in config": {
			[]string{"--set", "config.admin.publish_token=" + testPublishToken}, "publish_token",
		},
		"short publish token": {[]string{"--set", "publishToken.value=only-15-bytes-x"}, "/publishToken/value"},
		"publish token value and existing": {
			[]string{"--set", "publishToken.value=" + testPublishToken, "--set", "publishToken.existingSecret=x"},
			"publishToken: set value or existingSecret, not both",
		},
		// The templates refuse on their own too, for --skip-schema-validation.
		"publish token in config without schema": {
			[]string{"--skip-schema-validation", "--set", "config.admin.publish_token=" + testPublishToken},
			"config.admin.publish_token must stay empty",
		},
		"short publish token without schema": {
			[]string{"--skip-schema-validation", "--set", "publishToken.value=only-15-bytes-x"},
			"publishToken.value must be at least 16 bytes",
		},
		"publish token key empty": {[]string{"--set", "publishToken.key="}, "/publishToken/key"},
		"assertion key inline": {
			[]string{"-f", valuesFile("config:\n  assertion:\n    key_file: \"-----BEGIN PRIVATE KEY-----\\nMC4C\"\n")}, "/config/assertion/key_file",
		},
		"bad route auth": {
			[]string{"-f", valuesFile("config:\n  routes:\n    - {path: /ws/chat, upstream: ws://a:1, auth: token}\n")}, "/config/routes/0/auth",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := render(t, release, dir, tc.args...)
			if err == nil {
				t.Fatalf("helm template succeeded, want an error containing %q; rendered %d bytes", tc.wantErr, len(out))
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error does not mention %q:\n%v", tc.wantErr, err)
			}
		})
	}
}

// TestChartValuesVariants covers branches the ci files do not: JWKS-only auth, explicit grace,
// older clusters without the preStop sleep action, and a pinned digest.
func TestChartValuesVariants(t *testing.T) {
	dir := chartDir(t)
	t.Run("jwks only", func(t *testing.T) {
		out, err := render(t, release, dir, "--set", "hmacSecret.enabled=false", "--set", "config.auth.jwks_url=https://auth.example.com/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "jwks", []byte(out))
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		_, text, _ := checkWsgatePod(t, "jwks Deployment", ms, dep.Spec.Template.Spec, podWant{
			grace: 35, preStop: 5, publishName: defaultPublishName, publishKey: defaultPublishKey,
		})
		validateConfigEnv(t, "jwks", text, "WSGATE_ADMIN_PUBLISH_TOKEN="+testPublishToken)
	})
	t.Run("explicit grace", func(t *testing.T) {
		out, err := render(t, release, dir, "--set", "terminationGracePeriodSeconds=90", "--set", "config.shutdown_grace=1m20s")
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "grace", []byte(out))
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		checkWsgatePod(t, "grace Deployment", ms, dep.Spec.Template.Spec, podWant{
			secretName: release + "-wsgate-hmac", secretKey: "hmac-secret", grace: 90, preStop: 5,
			publishName: defaultPublishName, publishKey: defaultPublishKey,
		})
	})
	t.Run("kubernetes 1.29 has no preStop sleep", func(t *testing.T) {
		out, err := helm(t, "template", release, dir, "--kube-version", "1.29.0", "--set", "config.shutdown_grace=1500ms")
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "k8s-1.29", []byte(out))
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		// ceil(1.5s) + 0 + 5
		checkWsgatePod(t, "1.29 Deployment", ms, dep.Spec.Template.Spec, podWant{
			secretName: release + "-wsgate-hmac", secretKey: "hmac-secret", grace: 7, preStop: 0,
			publishName: defaultPublishName, publishKey: defaultPublishKey,
		})
	})
	t.Run("publish token off", func(t *testing.T) {
		out, err := render(t, release, dir, "--set", "publishToken.enabled=false")
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "publish-off", []byte(out))
		ms.noneNamed(t, "Secret", defaultPublishName)
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		_, text, _ := checkWsgatePod(t, "publish-off Deployment", ms, dep.Spec.Template.Spec, podWant{
			secretName: release + "-wsgate-hmac", secretKey: "hmac-secret", grace: 35, preStop: 5,
		})
		validateConfig(t, "publish-off", text, true)
	})
	t.Run("publish token value", func(t *testing.T) {
		out, err := render(t, release, dir, "--set", "publishToken.value="+testPublishToken, "--set", "publishToken.key=token")
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "publish-value", []byte(out))
		if got := checkPublishSecret(t, ms, defaultPublishName, "token", false); got != testPublishToken {
			t.Errorf("publish token Secret holds %d bytes that are not publishToken.value", len(got))
		}
		dep := ms.one(t, "Deployment").Typed.(*appsv1.Deployment)
		checkWsgatePod(t, "publish-value Deployment", ms, dep.Spec.Template.Spec, podWant{
			secretName: release + "-wsgate-hmac", secretKey: "hmac-secret", grace: 35, preStop: 5,
			publishName: defaultPublishName, publishKey: "token",
		})
	})
	t.Run("issue 12 budgets", func(t *testing.T) {
		// The budgets wsgate added for hostile clients pass the schema and wsgate validate.
		values := filepath.Join(t.TempDir(), "budgets.yaml")
		body := `config:
  limits:
    idle_timeout: 30s
    failed_verifications_per_second_per_ip: 2
    publish_bytes_per_second: 1048576
  routes:
    - path: /ws/ai/durable/{session}
      subscribe: ["ai:durable:{session}"]
      require: {session: sid}
      history: {size: 100, ttl: 5m, max_message_bytes: 65536, max_replay_bytes: 1048576}
`
		if err := os.WriteFile(values, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := render(t, release, dir, "-f", values)
		if err != nil {
			t.Fatal(err)
		}
		cm := decodeManifests(t, "budgets", []byte(out)).one(t, "ConfigMap").Typed.(*corev1.ConfigMap)
		validateConfigEnv(t, "budgets", cm.Data["config.yaml"],
			"WSGATE_AUTH_HMAC_SECRET="+testHMACKey, "WSGATE_ADMIN_PUBLISH_TOKEN="+testPublishToken)
	})
	t.Run("digest", func(t *testing.T) {
		digest := "sha256:" + strings.Repeat("ab", 32)
		out, err := render(t, release, dir, "--set", "image.digest="+digest)
		if err != nil {
			t.Fatal(err)
		}
		dep := decodeManifests(t, "digest", []byte(out)).one(t, "Deployment").Typed.(*appsv1.Deployment)
		if got, want := dep.Spec.Template.Spec.Containers[0].Image, "ghcr.io/wsgate/wsgate@"+digest; got != want {
			t.Errorf("image %q, want %q", got, want)
		}
	})
}

// TestChartSidecarHost renders charts/examples/ai-service, a host chart that depends on wsgate in
// sidecar mode and includes wsgate.sidecarContainer as a native sidecar.
func TestChartSidecarHost(t *testing.T) {
	root := repoRoot(t)
	host := filepath.Join(t.TempDir(), "ai-service")
	copyDir(t, filepath.Join(root, "charts", "examples", "ai-service"), host)
	copyDir(t, filepath.Join(root, "charts", "wsgate"), filepath.Join(host, "charts", "wsgate"))

	if out, err := helm(t, "lint", "--strict", host, "--kube-version", kubeVersion); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := render(t, "shop", host)
	if err != nil {
		t.Fatal(err)
	}
	ms := decodeManifests(t, "ai-service", []byte(out))
	if got, want := fmt.Sprint(ms.kinds()), "[ConfigMap Deployment Secret Service]"; got != want {
		t.Errorf("kinds %s, want %s", got, want)
	}
	dep := ms.named(t, "Deployment", "shop-ai-service").Typed.(*appsv1.Deployment)
	spec := dep.Spec.Template.Spec
	const hostPublish = "shop-wsgate-publish-token"
	_, text, c := checkWsgatePod(t, "host Deployment", ms, spec, podWant{
		secretName: "ai-service-jwt", secretKey: "hmac", native: true, grace: 35, preStop: 5,
		publishName: hostPublish, publishKey: defaultPublishKey,
	})
	if len(spec.Containers) != 1 || spec.Containers[0].Name != "app" {
		t.Fatalf("host containers %v, want only app", spec.Containers)
	}
	// The producer in the pod reads the token wsgate reads, and publishes on wsgate's admin port.
	token := checkPublishSecret(t, ms, hostPublish, defaultPublishKey, true)
	app := spec.Containers[0]
	checkSecretEnv(t, "host app", app, "WSGATE_PUBLISH_TOKEN", hostPublish, defaultPublishKey)
	checkPublishURL(t, "host app", app, c)
	if ms.named(t, "ConfigMap", "shop-wsgate").Name == "" {
		t.Fatal("no wsgate ConfigMap")
	}
	h := sha256.Sum256([]byte(strings.TrimSuffix(text, "\n")))
	if got, want := dep.Spec.Template.Annotations["checksum/wsgate-config"], hex.EncodeToString(h[:]); got != want {
		t.Errorf("host checksum annotation %q, want %q", got, want)
	}
	svc := ms.named(t, "Service", "shop-ai-service").Typed.(*corev1.Service)
	checkSelects(t, "host Service", svc.Spec.Selector, dep.Spec.Template.Labels)
	if tp := svc.Spec.Ports[0].TargetPort; tp.IntValue() != int(c.Ports[0].ContainerPort) || c.Ports[0].Name != "http" {
		t.Errorf("host Service targets %s, want wsgate's http port %d", tp.String(), c.Ports[0].ContainerPort)
	}
	validateConfigEnv(t, "ai-service", text, "WSGATE_AUTH_HMAC_SECRET="+testHMACKey, "WSGATE_ADMIN_PUBLISH_TOKEN="+token)

	// With publishToken off, neither wsgate nor the app gets a token and no Secret is made.
	out, err = render(t, "shop", host, "--set", "wsgate.publishToken.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	off := decodeManifests(t, "ai-service publish off", []byte(out))
	off.noneNamed(t, "Secret", hostPublish)
	offSpec := off.named(t, "Deployment", "shop-ai-service").Typed.(*appsv1.Deployment).Spec.Template.Spec
	checkWsgatePod(t, "host Deployment, publish off", off, offSpec, podWant{
		secretName: "ai-service-jwt", secretKey: "hmac", native: true, grace: 35, preStop: 5,
	})
	checkSecretEnv(t, "host app, publish off", offSpec.Containers[0], "WSGATE_PUBLISH_TOKEN", "", "")

	// Native sidecars need Kubernetes 1.29: older clusters would run wsgate as a plain init
	// container that never finishes, and the app would never start.
	_, err = helm(t, "template", "shop", host, "--kube-version", "1.28.0")
	if err == nil || !strings.Contains(err.Error(), "native sidecars") {
		t.Errorf("rendering for Kubernetes 1.28 gave %v, want the native sidecar refusal", err)
	}
}

// renderNotes renders the chart's NOTES.txt, which `helm template` skips: a copy of the chart
// carries it as a plain file and one extra template that runs it through tpl with the release's
// context, so what the operator reads after `helm install` can be asserted offline.
func renderNotes(t *testing.T, args ...string) string {
	t.Helper()
	chart := filepath.Join(t.TempDir(), "wsgate")
	copyDir(t, chartDir(t), chart)
	if err := os.Rename(filepath.Join(chart, "templates", "NOTES.txt"), filepath.Join(chart, "notes-under-test.txt")); err != nil {
		t.Fatal(err)
	}
	const wrapper = `apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-under-test
data:
  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | quote }}
`
	if err := os.WriteFile(filepath.Join(chart, "templates", "notes-under-test.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := render(t, release, chart, append([]string{"--show-only", "templates/notes-under-test.yaml"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	notes := decodeManifests(t, "NOTES", []byte(out)).one(t, "ConfigMap").Typed.(*corev1.ConfigMap).Data["notes"]
	if notes == "" {
		t.Fatal("NOTES rendered empty")
	}
	return notes
}

// TestChartNotesPublishToken: NOTES tells the operator where the publish token is and how a
// producer reads it, and warns when /publish is left open.
func TestChartNotesPublishToken(t *testing.T) {
	getToken := func(secret, key string) string {
		return fmt.Sprintf("kubectl -n wsgate-test get secret %s -o jsonpath='{.data.%s}' | base64 -d", secret, key)
	}
	const open = "WARNING: publishToken.enabled is false"
	cases := map[string]struct {
		args       []string
		want, deny []string
	}{
		"generated": {
			want: []string{`"Authorization: Bearer <token>"`, getToken(defaultPublishName, defaultPublishKey), "generated by this chart, kept across upgrades"},
			deny: []string{open},
		},
		"existing secret": {
			args: []string{"--set", "publishToken.existingSecret=shared", "--set", "publishToken.key=token"},
			want: []string{getToken("shared", "token"), "publishToken.existingSecret naming a Secret you share"},
			deny: []string{open, "generated by this chart"},
		},
		"sidecar": {
			args: []string{"-f", filepath.Join(chartDir(t), "ci", "sidecar-values.yaml")},
			want: []string{getToken(defaultPublishName, defaultPublishKey), `include "wsgate.publishTokenSecretKeyRef" .Subcharts.wsgate`, "http://127.0.0.1:9090/publish", "holds only the ConfigMap and a Secret."},
			deny: []string{open},
		},
		"off": {
			args: []string{"--set", "publishToken.enabled=false"},
			want: []string{open, "(9090) takes no token", "networkPolicy.enabled"},
			deny: []string{"get secret " + defaultPublishName},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			notes := renderNotes(t, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES lack %q:\n%s", w, notes)
				}
			}
			for _, d := range tc.deny {
				if strings.Contains(notes, d) {
					t.Errorf("NOTES contain %q:\n%s", d, notes)
				}
			}
		})
	}
}
