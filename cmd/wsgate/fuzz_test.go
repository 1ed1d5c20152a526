package main

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

// FuzzConfig feeds YAML through the same path as `wsgate serve --config`:
// viper, then decodeConfig. Whatever the bytes: no panic, and no error text
// repeats the auth.hmac_secret or the Redis password it was given.
func FuzzConfig(f *testing.F) {
	for _, k := range os.Environ() {
		if strings.HasPrefix(k, "WSGATE_") {
			f.Skip("WSGATE_* variables are set: they would override the fuzzed file")
		}
	}
	f.Fuzz(func(t *testing.T, yaml []byte) {
		if len(yaml) > 64<<10 {
			return
		}
		v := newViper(pflag.NewFlagSet("fuzz", pflag.ContinueOnError))
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(yaml)); err != nil {
			return // not YAML: loadConfig reports viper's parse error as is
		}
		secret := v.GetString("auth.hmac_secret")
		if !safeToRead(secret, v.GetStringSlice("auth.public_keys")) {
			return
		}
		cfg, err := decodeConfig(v)
		if err == nil {
			if cfg == nil || len(cfg.Proxy.Routes) == 0 {
				t.Fatalf("decodeConfig accepted a config with no routes: %+v", cfg)
			}
			if err := cfg.Proxy.Validate(); err != nil {
				t.Fatalf("decodeConfig accepted a proxy config that fails Validate: %v", err)
			}
			if err := cfg.Auth.Validate(); err != nil {
				t.Fatalf("decodeConfig accepted an auth config that fails Validate: %v", err)
			}
			// What validate accepts, serve builds: construction (everything
			// but binding and dialling) neither panics nor fails.
			if _, err := newGateway(cfg, zap.NewNop(), nil); err != nil {
				t.Fatalf("validate accepted a config that serve cannot build: %v", err)
			}
			return
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "config: ") {
			t.Fatalf("error %q does not start with \"config: \"", msg)
		}
		if len(secret) >= 8 && !strings.HasPrefix(secret, "file:") && strings.Contains(msg, secret) &&
			strings.Count(string(yaml), secret) < 2 { // given once: as the secret only
			t.Fatalf("error text repeats auth.hmac_secret %q:\n%s", secret, msg)
		}
		if u, perr := url.Parse(v.GetString("redis.url")); perr == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && len(pw) >= 8 && strings.Contains(msg, pw) && strings.Count(string(yaml), pw) < 2 {
				t.Fatalf("error text repeats the redis.url password %q:\n%s", pw, msg)
			}
		}
	})
}

// safeToRead keeps the fuzzer away from files that never end or block
// (/dev/zero, /proc/kmsg): auth.hmac_secret "file:PATH" and public_keys are
// read by decodeConfig.
func safeToRead(secret string, keyFiles []string) bool {
	var paths []string
	if p, ok := strings.CutPrefix(secret, "file:"); ok {
		paths = append(paths, p)
	}
	paths = append(paths, keyFiles...)
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return false
		}
		for _, dir := range []string{"/dev", "/proc", "/sys"} {
			if abs == dir || strings.HasPrefix(abs, dir+"/") {
				return false
			}
		}
		if fi, err := os.Stat(p); err == nil && (!fi.Mode().IsRegular() || fi.Size() > 1<<20) {
			return false
		}
	}
	return true
}
