package traefik_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

// Binaries the suite runs, set by TestMain.
var (
	traefikBin string
	wsgateBin  string
	repoRoot   string
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(file), "..", "..")
	traefikBin = os.Getenv("TRAEFIK_BIN")
	if traefikBin == "" {
		// `go test ./...` (make test-go) passes through here; make test-gateway sets TRAEFIK_BIN.
		fmt.Println("e2e/traefik: TRAEFIK_BIN unset, gateway suite skipped (run make test-gateway)")
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/traefik:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	wsgateBin = os.Getenv("WSGATE_BIN")
	if wsgateBin == "" {
		dir, err := os.MkdirTemp("", "wsgate-e2e-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		wsgateBin = filepath.Join(dir, "wsgate")
		cmd := exec.Command("go", "build", "-o", wsgateBin, "./cmd/wsgate")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("go build ./cmd/wsgate: %v\n%s", err, out)
		}
	}
	// goleak.Find rather than VerifyTestMain, which exits before the deferred cleanup.
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code, nil
}
