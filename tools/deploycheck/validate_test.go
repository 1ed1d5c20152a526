package deploycheck

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testHMACKey is what the pods would read from their Secret; 48 bytes.
const testHMACKey = "deploycheck-hmac-key-0123456789abcdef0123456789ab"

// testPublishToken stands for the admin publish token a pod reads from its Secret; 32 bytes.
const testPublishToken = "deploycheck-publish-0123456789ab"

// wsgateBin is the binary scripts/test-deploy.sh builds; empty when run by hand without it.
func wsgateBin() string { return os.Getenv("WSGATE_BIN") }

// runValidate runs `wsgate validate --config` on a config text in a clean environment
// (no stray WSGATE_* variables from the caller) and returns the combined output and exit code.
func runValidate(t *testing.T, text string, env ...string) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(wsgateBin(), "validate", "--config", path)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("run %s: %v", wsgateBin(), err)
		return "", -1
	}
}

// validateConfig asserts that wsgate accepts a rendered config, the way the pod would start it:
// the HMAC key arrives through WSGATE_AUTH_HMAC_SECRET when the pod has it.
func validateConfig(t *testing.T, where, text string, withHMAC bool) {
	t.Helper()
	var env []string
	if withHMAC {
		env = append(env, "WSGATE_AUTH_HMAC_SECRET="+testHMACKey)
	}
	validateConfigEnv(t, where, text, env...)
}

// validateConfigEnv asserts that wsgate accepts a rendered config with exactly the WSGATE_* env
// the pod would have (for example the publish token the chart put into its Secret).
func validateConfigEnv(t *testing.T, where, text string, env ...string) {
	t.Helper()
	if wsgateBin() == "" {
		t.Logf("%s: wsgate validate not run (WSGATE_BIN unset; scripts/test-deploy.sh sets it)", where)
		return
	}
	out, code := runValidate(t, text, env...)
	if code != 0 || !strings.Contains(out, "config OK") {
		t.Errorf("%s: wsgate validate exit %d, want 0 and \"config OK\":\n%s\n--- config ---\n%s", where, code, out, text)
	}
}

// TestValidateRejects pins the half of the contract the other tests rely on: validate exits 1 and
// names the key for configs the chart must never produce, so a passing validate means something.
func TestValidateRejects(t *testing.T) {
	if wsgateBin() == "" {
		t.Skip("WSGATE_BIN unset; scripts/test-deploy.sh builds wsgate and sets it")
	}
	const good = "routes:\n  - path: /ws/chat\n    upstream: ws://127.0.0.1:8000/ws/chat\n"
	if out, code := runValidate(t, good, "WSGATE_AUTH_HMAC_SECRET="+testHMACKey); code != 0 {
		t.Fatalf("baseline config refused (exit %d):\n%s", code, out)
	}
	cases := map[string]struct {
		config  string
		env     []string
		wantKey string
	}{
		"route without target": {
			config:  "routes:\n  - path: /ws/chat\n",
			env:     []string{"WSGATE_AUTH_HMAC_SECRET=" + testHMACKey},
			wantKey: "routes",
		},
		"no routes": {
			config:  "listen: \":8080\"\n",
			env:     []string{"WSGATE_AUTH_HMAC_SECRET=" + testHMACKey},
			wantKey: "routes",
		},
		"no verification key": {
			config:  good,
			wantKey: "auth",
		},
		// The chart's publish token reaches wsgate only through this variable: validate must
		// apply it, so the rendered token's acceptance below is a real check.
		"short publish token from env": {
			config:  good,
			env:     []string{"WSGATE_AUTH_HMAC_SECRET=" + testHMACKey, "WSGATE_ADMIN_PUBLISH_TOKEN=only-15-bytes-x"},
			wantKey: "admin.publish_token",
		},
		"unknown key": {
			config:  good + "listn: \":8080\"\n",
			env:     []string{"WSGATE_AUTH_HMAC_SECRET=" + testHMACKey},
			wantKey: "listn",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			out, code := runValidate(t, tc.config, tc.env...)
			if code != 1 {
				t.Errorf("exit %d, want 1:\n%s", code, out)
			}
			if !strings.Contains(out, tc.wantKey) {
				t.Errorf("output does not name %q:\n%s", tc.wantKey, out)
			}
		})
	}
}
