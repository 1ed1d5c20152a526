// Command wsgate is the WebSocket auth sidecar: it verifies the JWT a browser
// passes on the upgrade, re-dials the upstream with header authentication,
// and bridges Redis Pub/Sub channels. This package only wires the others.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is stamped by `make build` (-X main.version=...).
var version = "dev"

const usage = `wsgate: WebSocket auth sidecar

Usage:
  wsgate serve    --config FILE     run the gateway
  wsgate validate --config FILE     check a config; print every problem; exit 1 if any
  wsgate demo                       run the embedded demo (no Redis, no other service)
  wsgate token    [flags]           mint a dev HS256 token
  wsgate probe    [--addr A] [PATH] GET http://A/PATH (default 127.0.0.1:9090 /healthz); exit 0 on 200
  wsgate version                    print the version

Every config key can be set by an environment variable: WSGATE_ + the key in
upper case with dots as underscores (WSGATE_AUTH_HMAC_SECRET, WSGATE_REDIS_URL).
Run 'wsgate COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "probe":
		return cmdProbe(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "wsgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "wsgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}
