package main

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/wstest"
)

// Issue 11: validate builds what serve builds, so every config it accepts
// starts, and every config it refuses is refused by serve with the same
// words, each naming a key and no source file. Run against the real binary.
func TestValidateAndServeAgree(t *testing.T) {
	route := func(path, upstream string) string {
		return fmt.Sprintf("routes:\n  - {path: %q, upstream: %q}\n", path, upstream)
	}
	cases := map[string]struct {
		body string // appended to listen, admin_listen and the secret
		want string // "" : starts
	}{
		"catch-all route":             {body: route("/", "ws://127.0.0.1:9/x")},
		"tail parameter":              {body: route("/ws/{rest...}", "ws://127.0.0.1:9/{rest}")},
		"gorilla chat heartbeat":      {body: "heartbeat: {interval: 54s, timeout: 60s}\n" + route("/ws", "ws://127.0.0.1:9/x")},
		"route over /auth/verify":     {body: route("/auth/verify", "ws://127.0.0.1:9/x"), want: "config: routes[0].path: takes /auth/verify"},
		"client chooses the host":     {body: route("/ws/{host}", "ws://{host}/x"), want: "config: routes[0].upstream: placeholders may only be used in the path"},
		"userinfo in the upstream":    {body: route("/ws", "ws://svc:pw@127.0.0.1:9/x"), want: "config: routes[0].upstream: must not carry userinfo"},
		"port 99999":                  {body: route("/ws", "ws://127.0.0.1:99999/x"), want: "config: routes[0].upstream: port 99999"},
		"1ns dial timeout":            {body: "dial_timeout: 1ns\n" + route("/ws", "ws://127.0.0.1:9/x"), want: "config: dial_timeout: 1ns is too short"},
		"1ns handshake timeout":       {body: "limits: {handshake_timeout: 1ns}\n" + route("/ws", "ws://127.0.0.1:9/x"), want: "config: limits.handshake_timeout: 1ns is too short"},
		"conflicting route patterns":  {body: "routes:\n  - {path: \"/ws/{a}\", upstream: \"ws://127.0.0.1:9/a\"}\n  - {path: \"/ws/{b}\", upstream: \"ws://127.0.0.1:9/b\"}\n", want: "config: routes[1].path:"},
		"listeners on the same port":  {body: "SAMEPORT\n" + route("/ws", "ws://127.0.0.1:9/x"), want: "config: admin_listen:"},
		"wildcard and loopback clash": {body: "WILDCARD\n" + route("/ws", "ws://127.0.0.1:9/x"), want: "config: admin_listen:"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			listen, admin := freeAddr(t), freeAddr(t)
			_, port, _ := net.SplitHostPort(listen)
			head := fmt.Sprintf("listen: %q\nadmin_listen: %q\n", listen, admin)
			body := tc.body
			switch {
			case strings.HasPrefix(body, "SAMEPORT\n"):
				head, body = fmt.Sprintf("listen: %q\nadmin_listen: %q\n", listen, listen), strings.TrimPrefix(body, "SAMEPORT\n")
			case strings.HasPrefix(body, "WILDCARD\n"):
				head, body = fmt.Sprintf("listen: %q\nadmin_listen: %q\n", ":"+port, listen), strings.TrimPrefix(body, "WILDCARD\n")
			}
			cfg := writeConfig(t, head+fmt.Sprintf("auth: {hmac_secret: %q}\n", wstest.Secret)+body)
			code, out, verrs := runCLI("validate", "--config", cfg)
			p := start(t, "serve", "--config", cfg)
			if tc.want == "" {
				if code != 0 || !strings.Contains(out, "config OK") {
					t.Fatalf("validate refused: %s", verrs)
				}
				wstest.WaitFor(t, "readyz 200", func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })
				p.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case err := <-p.done:
					p.done <- err
					if err != nil {
						t.Fatalf("serve exited with %v:\n%s", err, p.stderr.String())
					}
				case <-time.After(30 * time.Second):
					t.Fatal("serve did not stop on SIGTERM")
				}
				return
			}
			if code != 1 || !strings.Contains(verrs, tc.want) {
				t.Fatalf("validate: exit %d, stderr %q, want %q", code, verrs, tc.want)
			}
			select {
			case err := <-p.done:
				p.done <- err
			case <-time.After(10 * time.Second):
				t.Fatal("serve started a config that validate refused")
			}
			serrs := p.stderr.String()
			if !strings.Contains(serrs, tc.want) {
				t.Errorf("serve's error %q lacks %q", serrs, tc.want)
			}
			for _, out := range []string{verrs, serrs} {
				if strings.Contains(out, "panic") || strings.Contains(out, ".go:") {
					t.Errorf("output has a panic or a source path:\n%s", out)
				}
			}
		})
	}
}
