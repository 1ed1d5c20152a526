package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// AssertionHeader carries the signed identity assertion to upstreams.
const AssertionHeader = "X-Wsgate-Assertion"

// Assertion defaults and bounds.
const (
	DefaultAssertionIssuer = "wsgate"
	// AssertionLifetime is how far ahead an assertion's exp lies: long
	// enough for an upstream's handshake, short enough that a captured
	// header is worth little.
	AssertionLifetime = 5 * time.Minute
)

// Signer signs identity assertions: short JWTs an upstream verifies against
// the key set at /.well-known/jwks.json to know that wsgate vouched for
// the user and tenant in the headers next to it. Safe for concurrent use.
type Signer struct {
	// Static after construction.
	alg    jwa.SignatureAlgorithm
	key    crypto.Signer
	hdr    jws.Headers
	issuer string
	jwks   []byte
	now    func() time.Time
}

// NewSigner loads the private key keySource names: "file:/path", a path,
// or the PEM itself (from an environment variable). The key is an EC P-256
// key (ES256) or an Ed25519 key (EdDSA), in PKCS#8 or SEC 1 form. issuer
// defaults to DefaultAssertionIssuer.
func NewSigner(keySource, issuer string) (*Signer, error) {
	pemBytes, err := readKeySource(keySource)
	if err != nil {
		return nil, err
	}
	key, alg, err := parseSigningKey(pemBytes)
	if err != nil {
		return nil, err
	}
	if issuer == "" {
		issuer = DefaultAssertionIssuer
	}
	pub, err := jwk.Import(key.Public())
	if err != nil {
		return nil, fmt.Errorf("assertion key: %w", err)
	}
	if err := jwk.AssignKeyID(pub); err != nil {
		return nil, fmt.Errorf("assertion key: %w", err)
	}
	kid, _ := pub.KeyID()
	for k, v := range map[string]any{jwk.AlgorithmKey: alg, jwk.KeyUsageKey: "sig"} {
		if err := pub.Set(k, v); err != nil {
			return nil, fmt.Errorf("assertion key: %w", err)
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("assertion key: %w", err)
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("assertion key: %w", err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set("kid", kid); err != nil {
		return nil, err
	}
	if err := hdr.Set("typ", "JWT"); err != nil {
		return nil, err
	}
	return &Signer{alg: alg, key: key, hdr: hdr, issuer: issuer, jwks: jwks, now: time.Now}, nil
}

// readKeySource returns the PEM keySource names.
func readKeySource(s string) ([]byte, error) {
	switch {
	case strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN"):
		return []byte(s), nil
	case s == "":
		return nil, errors.New("no key")
	}
	path := strings.TrimPrefix(s, "file:")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, errors.Unwrap(err))
	}
	return b, nil
}

// parseSigningKey accepts only the key types whose signatures are fixed
// size and fast to make: P-256 and Ed25519.
func parseSigningKey(pemBytes []byte) (crypto.Signer, jwa.SignatureAlgorithm, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, jwa.SignatureAlgorithm{}, errors.New("no PEM block")
	}
	var raw any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		raw, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		raw, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY or EC PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("parse private key: %v", err)
	}
	switch k := raw.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, jwa.SignatureAlgorithm{}, errors.New("EC key is not on P-256 (ES256)")
		}
		return k, jwa.ES256(), nil
	case ed25519.PrivateKey:
		return k, jwa.EdDSA(), nil
	}
	return nil, jwa.SignatureAlgorithm{}, fmt.Errorf("a %T cannot sign assertions: use an EC P-256 or Ed25519 key", raw)
}

// Assertion is what a signed assertion says.
type Assertion struct {
	// Audience is the upstream's origin (AudienceOf).
	Audience string
	User     string
	Tenant   string // omitted when empty
	// RequestID becomes jti, the X-Request-Id the upstream also sees.
	RequestID string
}

// Sign returns the compact JWT for a: iss, aud, sub, tenant_id, iat, exp
// (AssertionLifetime ahead) and jti.
func (s *Signer) Sign(a Assertion) (string, error) {
	now := s.now()
	claims := map[string]any{
		"iss": s.issuer,
		"aud": a.Audience,
		"sub": a.User,
		"iat": now.Unix(),
		"exp": now.Add(AssertionLifetime).Unix(),
		"jti": a.RequestID,
	}
	if a.Tenant != "" {
		claims["tenant_id"] = a.Tenant
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	out, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(s.hdr)))
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	return string(out), nil
}

// JWKS is the public key set, as served at /.well-known/jwks.json.
func (s *Signer) JWKS() []byte { return s.jwks }

// JWKSHandler serves JWKS.
func (s *Signer) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(s.jwks)
	})
}

// AudienceOf is the aud an upstream URL gets: its scheme, host and port,
// the port always spelled out (ws://svc:80, wss://svc:443).
func AudienceOf(upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "wss" || u.Scheme == "https" {
			port = "443"
		}
	}
	return u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port)
}
