package traefik_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Traefik's configuration under test comes from deploy/traefik: traefik.yaml is the static
// configuration, and the CRDs listed in kustomization.yaml are translated to the file provider
// (Middleware → http.middlewares, ServersTransport → http.serversTransports, each IngressRoute
// route → a router and a service). Kubernetes Service names resolve to loopback addresses the
// test chose; anything the translation does not understand fails the test rather than being
// dropped, so a new field in deploy/traefik is either tested or refused.

// tree is decoded YAML: maps, lists and scalars.
type tree = map[string]any

// backends maps a Kubernetes Service name and port (name or number) to a loopback host:port.
type backends map[string]map[string]string

func (b backends) resolve(service string, port any) (string, error) {
	ports, ok := b[service]
	if !ok {
		return "", fmt.Errorf("service %q has no test backend", service)
	}
	addr, ok := ports[fmt.Sprint(port)]
	if !ok {
		return "", fmt.Errorf("service %q has no test backend on port %v", service, port)
	}
	return addr, nil
}

// manifest is one Kubernetes object from deploy/traefik.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec tree `yaml:"spec"`
}

// readYAML decodes every document of a file.
func readYAML[T any](t *testing.T, path string) []T {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var v T
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, v)
	}
}

// traefikManifests returns the traefik.io objects that deploy/traefik's kustomization lists.
func traefikManifests(t *testing.T) []manifest {
	t.Helper()
	dir := filepath.Join(repoRoot, "deploy", "traefik")
	k := readYAML[struct {
		Resources []string `yaml:"resources"`
	}](t, filepath.Join(dir, "kustomization.yaml"))[0]
	var out []manifest
	for _, r := range k.Resources {
		if strings.HasPrefix(r, "../") {
			continue // deploy/base: wsgate's own config is read separately
		}
		for _, m := range readYAML[manifest](t, filepath.Join(dir, r)) {
			if !strings.HasPrefix(m.APIVersion, "traefik.io/") {
				t.Fatalf("%s: %s %s is not a Traefik CRD; the translation does not know it", r, m.Kind, m.Metadata.Name)
			}
			out = append(out, m)
		}
	}
	return out
}

// dynamicConfig translates deploy/traefik's CRDs to Traefik's file provider. cert and key are
// the files of the test's TLS certificate, served for every tls: {} route.
func dynamicConfig(t *testing.T, be backends, cert, key string) tree {
	t.Helper()
	routers, services, middlewares, transports := tree{}, tree{}, tree{}, tree{}
	for _, m := range traefikManifests(t) {
		name := m.Metadata.Name
		if m.Metadata.Namespace != "" {
			t.Fatalf("%s %s: a namespace in metadata is not translated", m.Kind, name)
		}
		switch m.Kind {
		case "Middleware":
			spec := deepCopy(m.Spec).(tree)
			if len(spec) != 1 {
				t.Fatalf("Middleware %s: want exactly one middleware type, got %d", name, len(spec))
			}
			if fa, ok := spec["forwardAuth"].(tree); ok {
				addr, err := resolveURL(be, fa["address"].(string))
				if err != nil {
					t.Fatalf("Middleware %s: %v", name, err)
				}
				fa["address"] = addr
			}
			refuseSecrets(t, "Middleware "+name, spec)
			middlewares[name] = spec
		case "ServersTransport":
			spec := deepCopy(m.Spec).(tree)
			refuseSecrets(t, "ServersTransport "+name, spec)
			transports[name] = spec
		case "IngressRoute":
			for i, r := range m.Spec["routes"].([]any) {
				route := r.(tree)
				id := fmt.Sprintf("%s-%d", name, i)
				if route["kind"] != "Rule" {
					t.Fatalf("IngressRoute %s: route kind %v is not translated", name, route["kind"])
				}
				router := tree{"rule": route["match"], "entryPoints": m.Spec["entryPoints"], "service": id}
				if p, ok := route["priority"]; ok {
					router["priority"] = p
				}
				var mws []any
				for _, mw := range asList(route["middlewares"]) {
					mw := mw.(tree)
					if len(mw) != 1 {
						t.Fatalf("IngressRoute %s: middleware reference %v: only a name is translated", name, mw)
					}
					mws = append(mws, mw["name"])
				}
				if len(mws) > 0 {
					router["middlewares"] = mws
				}
				if tls, ok := m.Spec["tls"]; ok {
					if len(asMap(tls)) != 0 {
						t.Fatalf("IngressRoute %s: tls options %v are not translated", name, tls)
					}
					router["tls"] = tree{}
				}
				routers[id] = router
				svcs := asList(route["services"])
				if len(svcs) != 1 {
					t.Fatalf("IngressRoute %s: %d services; one is translated", name, len(svcs))
				}
				svc := svcs[0].(tree)
				lb := tree{}
				for k, v := range svc {
					switch k {
					case "kind":
						if v != "Service" {
							t.Fatalf("IngressRoute %s: service kind %v is not translated", name, v)
						}
					case "name", "port":
					case "serversTransport":
						lb["serversTransport"] = v
					case "passHostHeader", "responseForwarding":
						lb[k] = v
					default:
						t.Fatalf("IngressRoute %s: service field %s is not translated", name, k)
					}
				}
				addr, err := be.resolve(svc["name"].(string), svc["port"])
				if err != nil {
					t.Fatalf("IngressRoute %s: %v", name, err)
				}
				lb["servers"] = []any{tree{"url": "http://" + addr}}
				services[id] = tree{"loadBalancer": lb}
			}
		default:
			t.Fatalf("%s %s: kind not translated", m.Kind, name)
		}
	}
	return tree{
		"http": tree{"routers": routers, "services": services, "middlewares": middlewares, "serversTransports": transports},
		"tls":  tree{"stores": tree{"default": tree{"defaultCertificate": tree{"certFile": cert, "keyFile": key}}}},
	}
}

// staticConfig is deploy/traefik/traefik.yaml with what a test run adds: the websecure address,
// the file provider, and Traefik's own and access log files in the given format.
func staticConfig(t *testing.T, websecure, dynamicFile, logFile, accessFile, accessFormat string) tree {
	t.Helper()
	st := readYAML[tree](t, filepath.Join(repoRoot, "deploy", "traefik", "traefik.yaml"))[0]
	set(st, websecure, "entryPoints", "websecure", "address")
	set(st, tree{"filename": dynamicFile, "watch": false}, "providers", "file")
	set(st, tree{"level": "DEBUG", "filePath": logFile, "noColor": true}, "log")
	set(st, accessFile, "accessLog", "filePath")
	set(st, accessFormat, "accessLog", "format")
	set(st, false, "global", "checkNewVersion")
	set(st, false, "global", "sendAnonymousUsage")
	return st
}

// resolveURL points a cluster URL (http://svc.ns.svc.cluster.local:port/path) at its test backend.
func resolveURL(be backends, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", fmt.Errorf("%s: %w", raw, err)
	}
	addr, err := be.resolve(strings.Split(host, ".")[0], port)
	if err != nil {
		return "", err
	}
	u.Host = addr
	return u.String(), nil
}

// refuseSecrets fails on fields that name Kubernetes Secrets: the file provider takes files.
func refuseSecrets(t *testing.T, what string, v any) {
	t.Helper()
	switch v := v.(type) {
	case tree:
		for k, e := range v {
			if strings.Contains(strings.ToLower(k), "secret") {
				t.Fatalf("%s: %s refers to a Kubernetes Secret; not translated", what, k)
			}
			refuseSecrets(t, what, e)
		}
	case []any:
		for _, e := range v {
			refuseSecrets(t, what, e)
		}
	}
}

// set assigns v at path, creating maps on the way.
func set(m tree, v any, path ...string) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(tree)
		if !ok {
			next = tree{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// get returns the map at path, failing the test when it is missing.
func get(t *testing.T, m tree, path ...string) tree {
	t.Helper()
	for _, k := range path {
		next, ok := m[k].(tree)
		if !ok {
			t.Fatalf("config has no %s", strings.Join(path, "."))
		}
		m = next
	}
	return m
}

func asList(v any) []any { l, _ := v.([]any); return l }
func asMap(v any) tree   { m, _ := v.(tree); return m }

func deepCopy(v any) any {
	switch v := v.(type) {
	case tree:
		out := tree{}
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
