package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// cmdProbe is an exec probe for images without a shell or curl: GET
// http://ADDR/PATH, exit 0 on 200.
func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("probe", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9090", "admin address")
	timeout := fs.Duration("timeout", 2*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	path := "/healthz"
	if fs.NArg() > 0 {
		path = fs.Arg(0)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get("http://" + *addr + path)
	if err != nil {
		fmt.Fprintf(stderr, "probe: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "probe: %s%s answered %d\n", *addr, path, resp.StatusCode)
		return 1
	}
	fmt.Fprintf(stdout, "probe: %s%s ok\n", *addr, path)
	return 0
}
