package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/wsgate/wsgate/auth"
)

// cmdToken mints a dev HS256 token. The secret comes from --secret, then
// WSGATE_AUTH_HMAC_SECRET, then the config file named by --config.
func cmdToken(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("token", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "config file to take auth.hmac_secret from")
	secret := fs.String("secret", "", "HMAC secret (>= 32 bytes); default: WSGATE_AUTH_HMAC_SECRET or the config's")
	sub := fs.String("sub", "dev-user", "user id (sub claim)")
	tenant := fs.String("tenant", "", "tenant id (tenant_id claim)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	iss := fs.String("iss", "", "issuer claim")
	aud := fs.StringSlice("aud", nil, "audience claim(s)")
	claims := fs.StringArray("claim", nil, "extra claim NAME=VALUE (repeat; NAME=a,b makes an array)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	key := *secret
	if key == "" {
		key = os.Getenv("WSGATE_AUTH_HMAC_SECRET")
	}
	if key == "" && *config != "" {
		v := newViper(fs)
		v.SetConfigFile(*config)
		if err := v.ReadInConfig(); err != nil {
			fmt.Fprintf(stderr, "token: read %s: %v\n", *config, err)
			return 1
		}
		var err error
		if key, err = readSecretFile(v.GetString("auth.hmac_secret")); err != nil {
			fmt.Fprintf(stderr, "token: auth.hmac_secret names a file that cannot be read: %v\n", err)
			return 1
		}
	}
	if len(key) < auth.MinHMACSecretBytes {
		fmt.Fprintf(stderr, "token: an HMAC secret of at least %d bytes is required (--secret, WSGATE_AUTH_HMAC_SECRET or --config)\n", auth.MinHMACSecretBytes)
		return 1
	}
	c := map[string]any{"sub": *sub, "exp": time.Now().Add(*ttl).Unix()}
	if *tenant != "" {
		c["tenant_id"] = *tenant
	}
	if *iss != "" {
		c["iss"] = *iss
	}
	if len(*aud) > 0 {
		c["aud"] = *aud
	}
	for _, kv := range *claims {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "token: --claim %q is not NAME=VALUE\n", k)
			return 2
		}
		if strings.Contains(v, ",") {
			c[k] = strings.Split(v, ",")
		} else {
			c[k] = v
		}
	}
	tok, err := auth.MintHS256([]byte(key), c)
	if err != nil {
		fmt.Fprintln(stderr, "token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
