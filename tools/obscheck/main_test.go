//go:build observability

package obscheck

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// wsgateBin is the wsgate binary under test: WSGATE_BIN, or one built for this run.
var wsgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "obscheck")
	if err != nil {
		panic(err)
	}
	wsgateBin = os.Getenv("WSGATE_BIN")
	if wsgateBin == "" {
		wsgateBin = filepath.Join(dir, "wsgate")
		if out, err := exec.Command("go", "build", "-o", wsgateBin, "../../cmd/wsgate").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build wsgate: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
