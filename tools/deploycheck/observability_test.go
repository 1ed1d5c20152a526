package deploycheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// dashboard is the subset of Grafana's dashboard model the chart's dashboard uses. It is
// decoded strictly: a field not listed here fails the test, so a typo ("legendFromat") or
// a field Grafana does not know cannot hide in the JSON.
type dashboard struct {
	Title        string   `json:"title"`
	UID          string   `json:"uid"`
	Description  string   `json:"description"`
	Tags         []string `json:"tags"`
	Timezone     string   `json:"timezone"`
	Editable     bool     `json:"editable"`
	GraphTooltip int      `json:"graphTooltip"`
	Refresh      string   `json:"refresh"`
	Schema       int      `json:"schemaVersion"`
	Version      int      `json:"version"`
	Time         struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []json.RawMessage `json:"list"`
	} `json:"annotations"`
	Links []struct {
		Title       string `json:"title"`
		Type        string `json:"type"`
		URL         string `json:"url"`
		TargetBlank bool   `json:"targetBlank"`
	} `json:"links"`
	Panels []panel `json:"panels"`
}

type templateVar struct {
	Name       string          `json:"name"`
	Label      string          `json:"label"`
	Type       string          `json:"type"`
	Datasource *datasourceRef  `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Current    struct{}        `json:"current"`
	Refresh    int             `json:"refresh"`
	Sort       int             `json:"sort"`
	Hide       int             `json:"hide"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Collapsed   bool           `json:"collapsed"`
	Datasource  *datasourceRef `json:"datasource"`
	GridPos     struct {
		H int `json:"h"`
		W int `json:"w"`
		X int `json:"x"`
		Y int `json:"y"`
	} `json:"gridPos"`
	FieldConfig *struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
		Overrides []json.RawMessage `json:"overrides"`
	} `json:"fieldConfig"`
	Options *struct {
		Legend struct {
			DisplayMode string `json:"displayMode"`
			Placement   string `json:"placement"`
			ShowLegend  bool   `json:"showLegend"`
		} `json:"legend"`
		Tooltip struct {
			Mode string `json:"mode"`
			Sort string `json:"sort"`
		} `json:"tooltip"`
	} `json:"options"`
	Targets []struct {
		RefID        string        `json:"refId"`
		Datasource   datasourceRef `json:"datasource"`
		Expr         string        `json:"expr"`
		LegendFormat string        `json:"legendFormat"`
		Range        bool          `json:"range"`
	} `json:"targets"`
	Panels []json.RawMessage `json:"panels"`
}

// prometheusRule is monitoring.coreos.com/v1 PrometheusRule, decoded strictly.
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec ruleGroups `json:"spec"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// strictJSON decodes js into v as the API server's strict validation would: case-sensitive
// names; unknown and duplicate fields are errors.
func strictJSON(js []byte, v any) error { return strictUnmarshal(js, v) }

// TestChartObservability renders the dashboard ConfigMap and the PrometheusRule and decodes
// both strictly: the ConfigMap carries the sidecar label and the dashboard file byte for byte;
// every panel queries the templated data source; every alert has a severity and a runbook
// link to a section that exists in docs/runbook.md, under the configured base URL.
func TestChartObservability(t *testing.T) {
	dir := chartDir(t)
	root := repoRoot(t)
	t.Run("off by default", func(t *testing.T) {
		out, err := render(t, release, dir)
		if err != nil {
			t.Fatal(err)
		}
		ms := decodeManifests(t, "default", []byte(out))
		if n := ms.count("PrometheusRule"); n != 0 {
			t.Errorf("%d PrometheusRule rendered by default", n)
		}
		if n := ms.count("ConfigMap"); n != 1 {
			t.Errorf("%d ConfigMaps by default, want only the config", n)
		}
	})

	const base = "https://wiki.example.com/ops/wsgate"
	tracingValues := filepath.Join(t.TempDir(), "tracing.yaml")
	err := os.WriteFile(tracingValues, []byte("config:\n  tracing: {enabled: true, endpoint: \"http://otel-collector.monitoring:4317\", protocol: grpc, sample_ratio: 0.25}\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out, err := render(t, release, dir, "--set", "grafanaDashboard.enabled=true", "--set", "prometheusRule.enabled=true",
		"--set", "prometheusRule.labels.release=kube-prometheus-stack", "--set", "grafanaDashboard.annotations.grafana_folder=wsgate",
		"--set", "prometheusRule.runbookBaseURL="+base,
		"-f", tracingValues)
	if err != nil {
		t.Fatal(err)
	}
	ms := decodeManifests(t, "observability", []byte(out))
	for _, o := range ms.all("ConfigMap") {
		if text, ok := o.Typed.(*corev1.ConfigMap).Data["config.yaml"]; ok {
			if !strings.Contains(text, "sample_ratio: 0.25") {
				t.Errorf("config.yaml lacks the tracing section:\n%s", text)
			}
			validateConfig(t, "observability", text, true)
		}
	}
	if _, err := render(t, release, dir, "--set", "config.tracing.protocol=thrift"); err == nil || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("tracing.protocol=thrift rendered (%v); the schema must refuse it", err)
	}

	cm := ms.named(t, "ConfigMap", release+"-wsgate-dashboard")
	typed := cm.Typed.(*corev1.ConfigMap)
	if typed.Labels["grafana_dashboard"] != "1" || typed.Annotations["grafana_folder"] != "wsgate" {
		t.Errorf("dashboard ConfigMap labels %v annotations %v, want grafana_dashboard=1 and the folder annotation", typed.Labels, typed.Annotations)
	}
	file, err := os.ReadFile(filepath.Join(dir, "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	text := typed.Data["wsgate.json"]
	if text != strings.TrimSuffix(string(file), "\n") {
		t.Errorf("ConfigMap wsgate.json differs from files/dashboard.json")
	}
	var d dashboard
	if err := strictJSON([]byte(text), &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	checkDashboard(t, d)

	pr := ms.one(t, "PrometheusRule")
	js, err := json.Marshal(pr.Fields)
	if err != nil {
		t.Fatal(err)
	}
	var rule prometheusRule
	if err := strictJSON(js, &rule); err != nil {
		t.Fatalf("PrometheusRule: %v", err)
	}
	if rule.Metadata.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule labels %v, want release=kube-prometheus-stack", rule.Metadata.Labels)
	}
	// The rendered groups are the file's, with only the runbook base replaced.
	var fromFile ruleGroups
	raw, err := os.ReadFile(filepath.Join(dir, "files", "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fileJS, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictJSON(fileJS, &fromFile); err != nil {
		t.Fatalf("files/prometheus-rules.yaml: %v", err)
	}
	wantJS, _ := json.Marshal(fromFile)
	wantJS = bytes.ReplaceAll(wantJS, []byte("https://github.com/wsgate/wsgate/blob/main/docs/runbook.md"), []byte(base))
	gotJS, _ := json.Marshal(rule.Spec)
	if !bytes.Equal(gotJS, wantJS) {
		t.Errorf("rendered rule groups differ from files/prometheus-rules.yaml:\n got %s\nwant %s", gotJS, wantJS)
	}
	runbook, err := os.ReadFile(filepath.Join(root, "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)\s*$`).FindAllStringSubmatch(string(runbook), -1) {
		anchors[strings.ToLower(m[1])] = true
	}
	wantAlerts := []string{"WsgateConnectionsNearCap", "WsgateDrainOverrunsGrace", "WsgateHandshakeFailureRatioHigh",
		"WsgateJWKSRefreshFailing", "WsgateNotReady", "WsgateRedisSubscriptionDown", "WsgateSlowConsumerClosesRising", "WsgateUpstreamDialErrors"}
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description are required", r.Alert)
			}
			want := base + "#" + strings.ToLower(r.Alert)
			if got := r.Annotations["runbook_url"]; got != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, want)
			}
			if !anchors[strings.ToLower(r.Alert)] {
				t.Errorf("%s: docs/runbook.md has no section \"## %s\"", r.Alert, r.Alert)
			}
		}
	}
	sort.Strings(alerts)
	if fmt.Sprint(alerts) != fmt.Sprint(wantAlerts) {
		t.Errorf("alerts %v, want %v", alerts, wantAlerts)
	}
}

// checkDashboard: unique panel ids, every query on the data source variable, every metric
// named in a query one wsgate exports (the list in docs/runbook.md's metrics table is not
// enough: tools/obscheck runs each query against a real Prometheus).
func checkDashboard(t *testing.T, d dashboard) {
	t.Helper()
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q: both required", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] || !vars["job"] {
		t.Errorf("dashboard variables %v, want datasource and job", vars)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want uid ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			if q.Datasource.UID != "${datasource}" || !strings.Contains(q.Expr, `job=~"$job"`) {
				t.Errorf("panel %q query %s: must use ${datasource} and job=~\"$job\"", p.Title, q.RefID)
			}
		}
	}
	if queries < 20 {
		t.Errorf("%d queries; the dashboard lost panels", queries)
	}
}
