package deploycheck

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// kubeVersion is the cluster version charts are rendered for. A go-installed helm would
// otherwise assume v1.20 and skip everything gated on newer clusters.
const kubeVersion = "1.31.0"

// repoRoot is the wsgate repository root (this module lives in tools/deploycheck).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "charts", "wsgate", "Chart.yaml")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func helmBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("helm")
	if err != nil {
		t.Fatal("helm not on PATH: run scripts/test-deploy.sh, which installs the pinned version")
	}
	return p
}

// helm runs the helm binary and returns stdout; stderr is folded into err's message.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &helmError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

type helmError struct {
	args   []string
	err    error
	stderr string
}

func (e *helmError) Error() string {
	return "helm " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.stderr
}

// render runs helm template for a chart directory with the cluster capabilities used everywhere.
func render(t *testing.T, release, chart string, args ...string) (string, error) {
	t.Helper()
	base := []string{"template", release, chart,
		"--namespace", "wsgate-test",
		"--kube-version", kubeVersion,
		"--api-versions", "monitoring.coreos.com/v1",
	}
	return helm(t, append(base, args...)...)
}

// copyDir copies a directory tree (regular files and directories only).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}
