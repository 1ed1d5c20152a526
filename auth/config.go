// Package auth turns a bearer token carried by a WebSocket handshake into a
// verified Identity. It knows nothing of proxying; its one use of Redis is
// the shared store of one-time tickets (ticket.go).
package auth

import (
	"fmt"
	"net/http"
	"time"

	"github.com/wsgate/wsgate/internal/configerr"
	"github.com/wsgate/wsgate/internal/zero"
)

// Config configures a Verifier. The zero value of each field is its documented
// default, except that at least one key source (HMACSecret, PublicKeyFiles or
// JWKSURL) must be set.
type Config struct {
	// HMACSecret verifies HS256/384/512 tokens. Must be at least 32 bytes.
	HMACSecret []byte
	// PublicKeyFiles are PEM files holding RSA, EC (P-256/384/521) or Ed25519
	// public keys (or certificates). Each key only verifies the algorithms of
	// its own type: RS*/PS* for RSA, the ES* of its curve for EC, EdDSA.
	PublicKeyFiles []string
	// JWKSURL is a remote JWK Set fetched before the Verifier is ready and
	// refreshed in the background. Empty: no remote keys.
	JWKSURL string
	// JWKSRefresh is the background refresh period. Defaults to 5m.
	JWKSRefresh time.Duration
	// JWKSMinRefetch is the least time between two fetches caused by an
	// unknown kid, so a flood of forged kids costs at most one fetch per
	// period. Defaults to 10s.
	JWKSMinRefetch time.Duration
	// JWKSTimeout bounds one JWKS fetch. Defaults to 5s.
	JWKSTimeout time.Duration
	// HTTPClient fetches the JWKS. Defaults to a client with no redirects to
	// other hosts and JWKSTimeout.
	HTTPClient *http.Client

	// Issuer, when set, must equal the iss claim.
	Issuer string
	// Audience, when set, must share at least one value with the aud claim.
	Audience []string
	// Leeway is the clock skew allowed on exp, nbf and iat. Zero: none (the
	// config file's default is 30s).
	Leeway time.Duration

	// QueryParam names the query parameter carrying the token. Defaults to "token".
	QueryParam string
	// Cookie names a cookie carrying the token. Empty: cookies are not read.
	Cookie string
	// SubprotocolPrefix marks a Sec-WebSocket-Protocol entry carrying the
	// token as base64url without padding (Kubernetes' convention). Defaults
	// to "base64url.bearer.authorization.k8s.io.".
	SubprotocolPrefix string
	// UserClaim names the claim holding the user id. Defaults to "sub".
	UserClaim string
	// TenantClaim names the claim holding the tenant id. Defaults to
	// "tenant_id". A token without it has an empty tenant.
	TenantClaim string

	// MaxTokenBytes refuses longer tokens before parsing. Defaults to 8192.
	MaxTokenBytes int
	// CacheSize bounds the verified-token cache (entries). Defaults to
	// 10000; negative disables the cache.
	CacheSize int
}

// Defaults for Config's zero values.
const (
	DefaultJWKSRefresh       = 5 * time.Minute
	DefaultJWKSMinRefetch    = 10 * time.Second
	DefaultJWKSTimeout       = 5 * time.Second
	DefaultQueryParam        = "token"
	DefaultSubprotocolPrefix = "base64url.bearer.authorization.k8s.io."
	DefaultUserClaim         = "sub"
	DefaultTenantClaim       = "tenant_id"
	DefaultMaxTokenBytes     = 8192
	DefaultCacheSize         = 10000
	// MinHMACSecretBytes is the shortest HMAC secret accepted (RFC 7518 §3.2
	// asks for a key as long as the hash output; 32 bytes covers HS256).
	MinHMACSecretBytes = 32
)

func (c Config) withDefaults() Config {
	zero.Default(&c.JWKSRefresh, DefaultJWKSRefresh)
	zero.Default(&c.JWKSMinRefetch, DefaultJWKSMinRefetch)
	zero.Default(&c.JWKSTimeout, DefaultJWKSTimeout)
	zero.Default(&c.QueryParam, DefaultQueryParam)
	zero.Default(&c.SubprotocolPrefix, DefaultSubprotocolPrefix)
	zero.Default(&c.UserClaim, DefaultUserClaim)
	zero.Default(&c.TenantClaim, DefaultTenantClaim)
	zero.Default(&c.MaxTokenBytes, DefaultMaxTokenBytes)
	zero.Default(&c.CacheSize, DefaultCacheSize)
	return c
}

// FieldError names the config field at fault. Keys are the config file's
// names relative to the auth section (e.g. "hmac_secret").
type FieldError = configerr.FieldError

// Validate reports every problem in c, each as a *FieldError, joined.
func (c Config) Validate() error {
	var problems configerr.List
	bad := problems.Add
	if len(c.HMACSecret) == 0 && len(c.PublicKeyFiles) == 0 && c.JWKSURL == "" {
		bad("hmac_secret", "no key source: set one of auth.hmac_secret, auth.public_keys, auth.jwks_url")
	}
	if n := len(c.HMACSecret); n > 0 && n < MinHMACSecretBytes {
		bad("hmac_secret", "is %d bytes; at least %d are required", n, MinHMACSecretBytes)
	}
	for i, f := range c.PublicKeyFiles {
		if _, err := loadPublicKeyFile(f); err != nil {
			bad(fmt.Sprintf("public_keys[%d]", i), "%v", err)
		}
	}
	if c.JWKSURL != "" {
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			bad("jwks_url", "%v", err)
		}
	}
	if c.Leeway < 0 {
		bad("leeway", "must not be negative")
	}
	if c.Leeway > 5*time.Minute {
		bad("leeway", "%s is more than 5m", c.Leeway)
	}
	for key, d := range map[string]time.Duration{"jwks_refresh": c.JWKSRefresh, "jwks_min_refetch": c.JWKSMinRefetch} {
		if d < 0 {
			bad(key, "must not be negative")
		}
	}
	return problems.Err()
}
