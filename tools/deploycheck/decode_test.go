package deploycheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// nativeKinds are the Kubernetes kinds the chart and manifests may contain, keyed by
// "apiVersion/kind". Each decodes strictly into its k8s.io/api type: an unknown or misspelt
// field, or a duplicate key, fails the test. A kind missing here fails too, so a stale
// apiVersion (apps/v1beta1, policy/v1beta1) cannot slip in.
var nativeKinds = map[string]func() any{
	"v1/ConfigMap":                           func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                              func() any { return new(corev1.Secret) },
	"v1/Service":                             func() any { return new(corev1.Service) },
	"v1/ServiceAccount":                      func() any { return new(corev1.ServiceAccount) },
	"v1/Pod":                                 func() any { return new(corev1.Pod) },
	"apps/v1/Deployment":                     func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":          func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return new(networkingv1.NetworkPolicy) },
	"networking.k8s.io/v1/Ingress":           func() any { return new(networkingv1.Ingress) },
}

// crdKinds have no Go type here; they decode into a map and must carry apiVersion, kind and
// metadata.name. Tests then assert the fields that matter.
var crdKinds = map[string]bool{
	"monitoring.coreos.com/v1/ServiceMonitor": true,
	"monitoring.coreos.com/v1/PrometheusRule": true, // observability_test.go decodes it strictly
	"traefik.io/v1alpha1/IngressRoute":        true,
	"traefik.io/v1alpha1/Middleware":          true,
	"traefik.io/v1alpha1/ServersTransport":    true,
	"configuration.konghq.com/v1/KongPlugin":  true,
}

// object is one decoded manifest document.
type object struct {
	APIVersion string
	Kind       string
	Name       string
	Labels     map[string]string
	// Typed is a pointer to the k8s.io/api struct for native kinds, nil for CRDs.
	Typed any
	// Fields is the document as a generic map (both native kinds and CRDs).
	Fields map[string]any
}

// manifests is a rendered set of documents.
type manifests []object

// decodeManifests splits a multi-document YAML stream and decodes every document strictly.
func decodeManifests(t *testing.T, source string, data []byte) manifests {
	t.Helper()
	var out manifests
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: split document %d: %v", source, i, err)
		}
		obj, ok, err := decodeDocument(doc)
		if err != nil {
			t.Errorf("%s: document %d: %v", source, i, err)
			continue
		}
		if ok {
			out = append(out, obj)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// decodeDocument decodes one document. ok is false for an empty (comment-only) document.
func decodeDocument(doc []byte) (obj object, ok bool, err error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, false, fmt.Errorf("yaml: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return object{}, false, nil
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return object{}, false, fmt.Errorf("header: %w", err)
	}
	if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
		return object{}, false, fmt.Errorf("missing apiVersion, kind or metadata.name in %s", firstLine(doc))
	}
	obj = object{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, Labels: head.Metadata.Labels}
	if err := json.Unmarshal(js, &obj.Fields); err != nil {
		return object{}, false, err
	}
	key := head.APIVersion + "/" + head.Kind
	if newTyped, native := nativeKinds[key]; native {
		obj.Typed = newTyped()
		if err := strictUnmarshal(js, obj.Typed); err != nil {
			return object{}, false, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
		}
		return obj, true, nil
	}
	if crdKinds[key] {
		return obj, true, nil
	}
	return object{}, false, fmt.Errorf("%s %s: apiVersion/kind %q is not one this project ships", head.Kind, head.Metadata.Name, key)
}

// strictUnmarshal decodes JSON the way the API server's strict field validation does:
// case-sensitive names, unknown and duplicate fields are errors.
func strictUnmarshal(js []byte, into any) error {
	strictErrs, err := kjson.UnmarshalStrict(js, into, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		return errors.Join(strictErrs...)
	}
	return nil
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// kinds lists the kind of every object, sorted, for exact assertions.
func (m manifests) kinds() []string {
	var ks []string
	for _, o := range m {
		ks = append(ks, o.Kind)
	}
	sort.Strings(ks)
	return ks
}

// count returns how many objects of a kind there are.
func (m manifests) count(kind string) int {
	n := 0
	for _, o := range m {
		if o.Kind == kind {
			n++
		}
	}
	return n
}

// one returns the single object of a kind, failing the test when there is not exactly one.
func (m manifests) one(t *testing.T, kind string) object {
	t.Helper()
	var found []object
	for _, o := range m {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, got %d (objects: %v)", kind, len(found), m.kinds())
	}
	return found[0]
}

// named returns the object of a kind with a name, failing the test when absent.
func (m manifests) named(t *testing.T, kind, name string) object {
	t.Helper()
	for _, o := range m {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	t.Fatalf("no %s named %q (objects: %v)", kind, name, m.kinds())
	return object{}
}

func (m manifests) all(kind string) []object {
	var out []object
	for _, o := range m {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// field walks a generic object by keys (map keys or list indexes as ints).
func field(v any, path ...any) (any, bool) {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			v, ok = m[k]
			if !ok {
				return nil, false
			}
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil, false
			}
			v = l[k]
		default:
			return nil, false
		}
	}
	return v, true
}

func fieldString(t *testing.T, o object, path ...any) string {
	t.Helper()
	v, ok := field(o.Fields, path...)
	if !ok {
		t.Fatalf("%s %s: no field %v", o.Kind, o.Name, path)
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s %s: field %v is %T, want string", o.Kind, o.Name, path, v)
	}
	return s
}
