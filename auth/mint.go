package auth

import (
	"crypto"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// Mint signs claims as a compact JWS with alg and key. It is for local
// development (wsgate token, wsgate demo) and tests; wsgate itself never
// issues tokens in production. exp defaults to one hour from now and iat to
// now when absent.
func Mint(alg jwa.SignatureAlgorithm, key any, kid string, claims map[string]any) (string, error) {
	c := make(map[string]any, len(claims)+2)
	for k, v := range claims {
		c[k] = v
	}
	now := time.Now()
	if _, ok := c["exp"]; !ok {
		c["exp"] = now.Add(time.Hour).Unix()
	}
	if _, ok := c["iat"]; !ok {
		c["iat"] = now.Unix()
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	hdr := jws.NewHeaders()
	if kid != "" {
		if err := hdr.Set("kid", kid); err != nil {
			return "", fmt.Errorf("mint: %w", err)
		}
	}
	if err := hdr.Set("typ", "JWT"); err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	if s, ok := key.(crypto.Signer); ok {
		key = s
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	return string(out), nil
}

// MintHS256 is Mint for an HMAC secret.
func MintHS256(secret []byte, claims map[string]any) (string, error) {
	return Mint(jwa.HS256(), secret, "", claims)
}
