package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

func ecKeyPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func edKeyPEM(t *testing.T) string {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// verifyingUpstream refuses (401) every handshake whose X-Wsgate-Assertion
// does not verify against the JWKS published at jwksURL, for its own
// origin, as an upstream behind wsgate would.
func verifyingUpstream(t *testing.T, jwksURL func() string) (*wstest.Upstream, <-chan *assertionClaims) {
	up := wstest.NewUpstream(t)
	verified := make(chan *assertionClaims, 4)
	inner := up.Config.Handler
	up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := verifyAssertion(r.Context(), jwksURL(), "ws://"+up.Listener.Addr().String(), r.Header.Values(auth.AssertionHeader))
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		verified <- tok
		inner.ServeHTTP(w, r)
	})
	return up, verified
}

// assertionClaims is what an upstream reads from a verified assertion.
type assertionClaims struct {
	Iss, Aud, Sub, Jti string
	Tenant             string `json:"tenant_id"`
	Iat, Exp           int64
}

// verifyAssertion is an upstream's check: the signature against the
// published key set (the algorithm from the JWK, never the token), then
// iss, aud and exp.
func verifyAssertion(ctx context.Context, jwksURL, aud string, values []string) (*assertionClaims, error) {
	if len(values) != 1 {
		return nil, errors.New("want exactly one assertion")
	}
	set, err := jwk.Fetch(ctx, jwksURL)
	if err != nil {
		return nil, err
	}
	payload, err := jws.Verify([]byte(values[0]), jws.WithKeySet(set, jws.WithRequireKid(true)))
	if err != nil {
		return nil, err
	}
	var c assertionClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, err
	}
	now := time.Now().Unix()
	switch {
	case c.Iss != "wsgate":
		return nil, fmt.Errorf("iss %q", c.Iss)
	case c.Aud != aud:
		return nil, fmt.Errorf("aud %q, want %q", c.Aud, aud)
	case c.Exp < now || c.Iat > now+5:
		return nil, errors.New("expired or from the future")
	case c.Sub == "" || c.Jti == "":
		return nil, errors.New("no sub or jti")
	}
	return &c, nil
}

func TestAssertionVerifiesAgainstTheJWKS(t *testing.T) {
	for name, keyPEM := range map[string]string{"ES256": ecKeyPEM(t), "EdDSA": edKeyPEM(t)} {
		t.Run(name, func(t *testing.T) {
			signer, err := auth.NewSigner(keyPEM, "")
			if err != nil {
				t.Fatal(err)
			}
			jwks := httptest.NewServer(signer.JWKSHandler()) // the admin listener's /.well-known/jwks.json
			t.Cleanup(jwks.Close)
			up, verified := verifyingUpstream(t, func() string { return jwks.URL })
			g := newGateway(t, func(o *gatewayOpts) {
				withRoutes(echoRoute(up))(o)
				o.serve = func(h *proxy.Handler) http.Handler { h.SignAssertions(signer); return h }
			})
			tok := wstest.Token(t, "alice", nil)
			// A client's own assertion is dropped; the upstream sees wsgate's only.
			opts := bearer(tok)
			opts.HTTPHeader.Set("X-Request-Id", "req-42")
			opts.HTTPHeader.Set(auth.AssertionHeader, "forged")
			c := g.dial(t, "/ws/echo", opts)
			c.CloseNow()
			claims := <-verified
			if claims.Sub != "alice" || claims.Tenant != "t1" || claims.Jti != "req-42" {
				t.Errorf("assertion %+v", claims)
			}
			if d := time.Duration(claims.Exp-claims.Iat) * time.Second; d <= 0 || d > 5*time.Minute {
				t.Errorf("assertion lives %s, want at most 5m", d)
			}

			// A forged assertion (another key, same claims) is rejected by
			// the upstream's check.
			other, err := auth.NewSigner(ecKeyPEM(t), "")
			if err != nil {
				t.Fatal(err)
			}
			forged, err := other.Sign(auth.Assertion{Audience: "ws://" + up.Listener.Addr().String(), User: "mallory", RequestID: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := verifyAssertion(context.Background(), jwks.URL, "ws://"+up.Listener.Addr().String(), []string{forged}); err == nil {
				t.Error("a forged assertion verified")
			}
			direct, resp, err := websocket.Dial(context.Background(), up.WSURL()+"/echo", &websocket.DialOptions{
				HTTPHeader: http.Header{auth.AssertionHeader: {forged}, "X-User-Id": {"mallory"}}})
			if err == nil {
				direct.CloseNow()
				t.Fatal("the upstream accepted a forged assertion")
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("forged assertion: status %d, want 401", resp.StatusCode)
			}
		})
	}
}

// Without a key no assertion is sent, and a client's never passes.
func TestNoAssertionWithoutAKey(t *testing.T) {
	up := wstest.NewUpstream(t)
	g := newGateway(t, withRoutes(echoRoute(up)))
	opts := bearer(wstest.Token(t, "alice", nil))
	opts.HTTPHeader.Set(auth.AssertionHeader, "forged")
	g.dial(t, "/ws/echo", opts).CloseNow()
	if v := up.LastRequest(t).Header.Values(auth.AssertionHeader); len(v) != 0 {
		t.Errorf("upstream got %s: %q", auth.AssertionHeader, v)
	}
}

func TestSignerRefusesUnfitKeys(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(p384)
	pub, _ := x509.MarshalPKIXPublicKey(p384.Public())
	for name, src := range map[string]string{
		"P-384 key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"public key":   string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
		"no such file": "file:/nonexistent/key.pem",
		"not PEM":      "-----BEGIN nonsense",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := auth.NewSigner(src, ""); err == nil {
				t.Error("accepted")
			}
		})
	}
}
