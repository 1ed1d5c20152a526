package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
)

// benchTokens holds one verifier per cache mode and a token per algorithm,
// all signed with keys the verifiers know.
type benchTokens struct {
	cold, cached *auth.Verifier
	tok          map[string]string
}

func newBenchTokens(b *testing.B) *benchTokens {
	b.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var files []string
	for name, pub := range map[string]any{"rsa.pem": &rsaKey.PublicKey, "ec.pem": &ecKey.PublicKey} {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			b.Fatal(err)
		}
		files = append(files, p)
	}
	newVerifier := func(cacheSize int) *auth.Verifier {
		v, err := auth.New(auth.Config{HMACSecret: secret, PublicKeyFiles: files, Leeway: 30 * time.Second, CacheSize: cacheSize}, zap.NewNop(), nil)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	c := map[string]any{"sub": "alice", "tenant_id": "t1", "exp": time.Now().Add(time.Hour).Unix()}
	bt := &benchTokens{cold: newVerifier(-1), cached: newVerifier(0), tok: map[string]string{}}
	for name, sk := range map[string]struct {
		alg jwa.SignatureAlgorithm
		key any
	}{"HS256": {jwa.HS256(), secret}, "RS256": {jwa.RS256(), rsaKey}, "ES256": {jwa.ES256(), ecKey}} {
		tok, err := auth.Mint(sk.alg, sk.key, "", c)
		if err != nil {
			b.Fatal(err)
		}
		bt.tok[name] = tok
	}
	return bt
}

// BenchmarkVerify measures what a handshake pays for its token: extraction
// from the query string plus verification. "cold" verifies the signature
// every time (cache_size: -1); "cached" is a reconnect with a token already
// verified (SHA-256 + map lookup).
func BenchmarkVerify(b *testing.B) {
	bt := newBenchTokens(b)
	ctx := context.Background()
	for _, mode := range []string{"cold", "cached"} {
		for _, alg := range []string{"HS256", "RS256", "ES256"} {
			v := bt.cold
			if mode == "cached" {
				v = bt.cached
			}
			tok := bt.tok[alg]
			r, err := http.NewRequest(http.MethodGet, "http://gw/ws/echo?token="+tok, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := v.Verify(ctx, tok); err != nil { // warms the cache in cached mode
				b.Fatal(err)
			}
			b.Run(mode+"/"+alg, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					raw, _, err := v.Extract(r)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := v.Verify(ctx, raw); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkExtract isolates token extraction from the handshake request.
func BenchmarkExtract(b *testing.B) {
	bt := newBenchTokens(b)
	tok := bt.tok["HS256"]
	for name, r := range map[string]*http.Request{
		"query":  mustRequest(b, "http://gw/ws/echo?a=1&token="+tok, nil),
		"header": mustRequest(b, "http://gw/ws/echo", http.Header{"Authorization": {"Bearer " + tok}}),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := bt.cold.Extract(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustRequest(b *testing.B, url string, h http.Header) *http.Request {
	b.Helper()
	r, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	for k, v := range h {
		r.Header[k] = v
	}
	return r
}
