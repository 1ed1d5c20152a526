package deploycheck

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// stage is one FROM ... block of the Dockerfile.
type stage struct {
	base, name string
	nodes      []*parser.Node
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile warning: %s", w.Short)
	}
	var stages []stage
	for _, n := range res.AST.Children {
		if strings.EqualFold(n.Value, "from") {
			s := stage{base: n.Next.Value}
			if as := n.Next.Next; as != nil && strings.EqualFold(as.Value, "as") && as.Next != nil {
				s.name = as.Next.Value
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if !strings.EqualFold(n.Value, "arg") {
				t.Errorf("instruction %s before the first FROM", n.Value)
			}
			continue
		}
		stages[len(stages)-1].nodes = append(stages[len(stages)-1].nodes, n)
	}
	return stages
}

// args returns an instruction's arguments.
func args(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

func (s stage) find(instr string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.nodes {
		if strings.EqualFold(n.Value, instr) {
			out = append(out, n)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	if !strings.HasPrefix(build.base, "golang:") {
		t.Errorf("build stage FROM %q, want golang:<version>", build.base)
	}
	if build.name == "" {
		t.Errorf("build stage has no name (FROM ... AS build)")
	}
	if final.base != "gcr.io/distroless/static-debian12:nonroot" && final.base != "scratch" &&
		!strings.HasPrefix(final.base, "gcr.io/distroless/static-debian12:nonroot@sha256:") {
		t.Errorf("final stage FROM %q, want gcr.io/distroless/static-debian12:nonroot or scratch", final.base)
	}

	// The build stage runs exactly the Makefile's build target, version stamped from ARG VERSION.
	var ranMake, hasVersionArg bool
	for _, n := range build.find("run") {
		if strings.Join(args(n), " ") == "make build VERSION=${VERSION}" {
			ranMake = true
		}
		if strings.Contains(strings.Join(args(n), " "), "go build") {
			t.Errorf("build stage runs go build directly (%q); it must go through make build", strings.Join(args(n), " "))
		}
	}
	if !ranMake {
		t.Errorf("build stage does not RUN make build VERSION=${VERSION}")
	}
	for _, n := range build.find("arg") {
		if a := args(n); len(a) > 0 && strings.HasPrefix(a[0], "VERSION") {
			hasVersionArg = true
		}
	}
	if !hasVersionArg {
		t.Errorf("build stage has no ARG VERSION")
	}

	// Final stage: the binary from the build stage, numeric non-root user, exec-form entrypoint.
	var copied bool
	for _, n := range final.find("copy") {
		a := args(n)
		from := false
		for _, fl := range n.Flags {
			if fl == "--from="+build.name {
				from = true
			}
		}
		if from && len(a) == 2 && a[0] == "/src/bin/wsgate" && a[1] == "/wsgate" {
			copied = true
		}
	}
	if !copied {
		t.Errorf("final stage does not COPY --from=%s /src/bin/wsgate /wsgate (the Makefile's output)", build.name)
	}
	users := final.find("user")
	if len(users) != 1 {
		t.Fatalf("final stage has %d USER instructions, want 1", len(users))
	}
	user := args(users[0])[0]
	uid, err := strconv.Atoi(strings.SplitN(user, ":", 2)[0])
	if err != nil || uid == 0 {
		t.Errorf("USER %q, want a numeric non-root UID (runAsNonRoot can only verify numbers)", user)
	} else if uid != wsgateUID {
		t.Errorf("USER %d, want %d (the chart's runAsUser)", uid, wsgateUID)
	}

	entry := final.find("entrypoint")
	if len(entry) != 1 || !entry[0].Attributes["json"] || fmt.Sprint(args(entry[0])) != "[/wsgate]" {
		t.Errorf("want exec-form ENTRYPOINT [\"/wsgate\"]")
	}
	cmd := final.find("cmd")
	if len(cmd) != 1 || !cmd[0].Attributes["json"] || fmt.Sprint(args(cmd[0])) != "[serve --config /etc/wsgate/config.yaml]" {
		t.Errorf("want exec-form CMD [\"serve\",\"--config\",\"/etc/wsgate/config.yaml\"]")
	}
	var exposed []string
	for _, n := range final.find("expose") {
		exposed = append(exposed, args(n)...)
	}
	if fmt.Sprint(exposed) != "[8080 9090]" {
		t.Errorf("EXPOSE %v, want [8080 9090]", exposed)
	}
	for _, n := range final.find("healthcheck") {
		t.Errorf("HEALTHCHECK %v: distroless has no shell or curl; Kubernetes probes /healthz and /readyz", args(n))
	}
	labels := map[string]string{}
	for _, n := range final.find("label") {
		// The parser yields key, value, separator for each pair.
		a := args(n)
		for i := 0; i+1 < len(a); i += 3 {
			labels[a[i]] = strings.Trim(a[i+1], `"`)
		}
	}
	for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source", "org.opencontainers.image.version"} {
		if labels[k] == "" {
			t.Errorf("OCI label %s missing (labels %v)", k, labels)
		}
	}
	if labels["org.opencontainers.image.version"] != "${VERSION}" {
		t.Errorf("org.opencontainers.image.version %q, want ${VERSION}", labels["org.opencontainers.image.version"])
	}
}

// TestMakeBuild: CGO_ENABLED=0, -trimpath and the version stamp come from `make build`, which the
// Dockerfile runs. make prints the recipe (-n); the test runs it with another output path and reads
// the flags back from the binary's build info.
func TestMakeBuild(t *testing.T) {
	root := repoRoot(t)
	const version = "deploycheck-test"
	dry := exec.Command("make", "--no-print-directory", "-n", "build", "VERSION="+version)
	dry.Dir = root
	out, err := dry.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	recipe := strings.TrimSpace(string(out))
	for _, want := range []string{"CGO_ENABLED=0 go build", "-trimpath", "-s -w", "-X main.version=" + version, " -o bin/wsgate ", "./cmd/wsgate"} {
		if !strings.Contains(recipe, want) {
			t.Errorf("make build recipe %q lacks %q", recipe, want)
		}
	}
	if t.Failed() {
		return
	}
	bin := filepath.Join(t.TempDir(), "wsgate")
	build := exec.Command("bash", "-c", strings.Replace(recipe, " -o bin/wsgate ", " -o "+bin+" ", 1))
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", recipe, err, out)
	}
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"build\tCGO_ENABLED=0", "build\t-trimpath=true"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("build info lacks %q:\n%s", want, info)
		}
	}
	v, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), version) {
		t.Errorf("wsgate version printed %q (%v), want the stamped %q", v, err, version)
	}
}

// TestDockerignore: the build context leaves out VCS data, build output and node_modules, but keeps
// everything `make build` needs.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{
		".git/HEAD":                       true,
		"bin/wsgate":                      true,
		"node_modules/ws/index.js":        true,
		"demo/web/node_modules/x/a.js":    true,
		"tools/deploycheck/go.mod":        true,
		"charts/wsgate/Chart.yaml":        true,
		"go.mod":                          false,
		"go.sum":                          false,
		"Makefile":                        false,
		"cmd/wsgate/main.go":              false,
		"auth/config.go":                  false,
		"internal/closecode/closecode.go": false,
		"demo/web/index.html":             false,
		"clients/js/src/index.js":         false,
		"clients/js/node_modules/ws/a.js": true,
	}
	for path, excluded := range cases {
		got, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != excluded {
			t.Errorf("%s excluded=%v, want %v", path, got, excluded)
		}
	}

	// Everything the main module builds from must reach the build stage: Go sources and the
	// files they //go:embed.
	root := repoRoot(t)
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "tools":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		needed := []string{rel}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			pats, ok := strings.CutPrefix(strings.TrimSpace(line), "//go:embed ")
			if !ok {
				continue
			}
			for _, pat := range strings.Fields(pats) {
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(p), strings.Trim(pat, "`\"")))
				for _, m := range matches {
					r, _ := filepath.Rel(root, m)
					needed = append(needed, r)
				}
			}
		}
		for _, n := range needed {
			if ex, err := pm.MatchesOrParentMatches(filepath.ToSlash(n)); err != nil || ex {
				t.Errorf(".dockerignore excludes %s, which the build needs (%v)", n, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
