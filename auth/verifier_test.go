package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/internal/wstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("auth-test-secret-0123456789abcdef-0123456789")

type keys struct {
	rsa      *rsa.PrivateKey
	ec256    *ecdsa.PrivateKey
	ec384    *ecdsa.PrivateKey
	ed       ed25519.PrivateKey
	rsaPEM   string // file path
	ec384PEM string
	edPEM    string
}

func newKeys(t *testing.T) *keys {
	t.Helper()
	k := &keys{}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	k.ec256, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k.ec384, _ = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, k.ed, _ = ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	write := func(name string, pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
		return p
	}
	k.rsaPEM = write("rsa.pem", &k.rsa.PublicKey)
	k.ec384PEM = write("ec384.pem", &k.ec384.PublicKey)
	k.edPEM = write("ed.pem", k.ed.Public())
	return k
}

func claims(extra map[string]any) map[string]any {
	c := map[string]any{"sub": "alice", "tenant_id": "t1", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// sign builds a compact JWS with extra protected header fields.
func sign(t *testing.T, alg jwa.SignatureAlgorithm, key any, hdr map[string]any, c map[string]any) string {
	t.Helper()
	payload, _ := json.Marshal(c)
	h := jws.NewHeaders()
	for k, v := range hdr {
		if err := h.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// raw builds a compact token from a literal header and claims, unsigned.
func raw(hdr, c map[string]any, sig string) string {
	h, _ := json.Marshal(hdr)
	p, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "." + sig
}

func newVerifier(t *testing.T, cfg auth.Config) (*auth.Verifier, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	v, err := auth.New(cfg, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	return v, reg
}

func TestVerifyAttackSuite(t *testing.T) {
	k := newKeys(t)
	// A counting server: any fetch of a jku/x5u URL fails the test.
	var fetches atomic.Int32
	spy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fetches.Add(1) }))
	defer spy.Close()

	v, _ := newVerifier(t, auth.Config{
		HMACSecret:     secret,
		PublicKeyFiles: []string{k.rsaPEM, k.ec384PEM, k.edPEM},
		Issuer:         "https://issuer.example",
		Audience:       []string{"wsgate", "dashboards"},
		Leeway:         30 * time.Second,
	})
	good := claims(map[string]any{"iss": "https://issuer.example", "aud": []string{"dashboards"}})
	rsaPubPEM, _ := os.ReadFile(k.rsaPEM)
	attackerJWK, _ := jwk.Import(k.ec256.PublicKey)
	now := time.Now()

	cases := map[string]struct {
		token string
		want  error // nil: accepted
	}{
		"HS256 valid":              {sign(t, jwa.HS256(), secret, nil, good), nil},
		"HS512 valid":              {sign(t, jwa.HS512(), secret, nil, good), nil},
		"RS256 valid":              {sign(t, jwa.RS256(), k.rsa, nil, good), nil},
		"PS384 valid":              {sign(t, jwa.PS384(), k.rsa, nil, good), nil},
		"ES384 valid":              {sign(t, jwa.ES384(), k.ec384, nil, good), nil},
		"EdDSA valid":              {sign(t, jwa.EdDSA(), k.ed, nil, good), nil},
		"expired within leeway":    {sign(t, jwa.HS256(), secret, nil, merge(good, "exp", now.Add(-10*time.Second).Unix())), nil},
		"alg none":                 {raw(map[string]any{"alg": "none"}, good, ""), auth.ErrSignature},
		"alg None mixed case":      {raw(map[string]any{"alg": "None"}, good, ""), auth.ErrSignature},
		"HS256 with RSA pub key":   {sign(t, jwa.HS256(), rsaPubPEM, nil, good), auth.ErrSignature},
		"ES256 unknown curve key":  {sign(t, jwa.ES256(), k.ec256, nil, good), auth.ErrSignature},
		"ES384 header, RSA sig":    {swapAlg(t, sign(t, jwa.RS256(), k.rsa, nil, good), "ES384"), auth.ErrSignature},
		"zero ECDSA signature":     {zeroSig(sign(t, jwa.ES384(), k.ec384, nil, good), 96), auth.ErrSignature},
		"truncated signature":      {sign(t, jwa.HS256(), secret, nil, good)[:40], auth.ErrMalformed},
		"kid path traversal":       {sign(t, jwa.HS256(), []byte("wrong-secret-wrong-secret-wrong!!"), map[string]any{"kid": "../../../../dev/null"}, good), auth.ErrSignature},
		"kid SQL":                  {sign(t, jwa.HS256(), []byte("wrong-secret-wrong-secret-wrong!!"), map[string]any{"kid": "' OR 1=1 --"}, good), auth.ErrSignature},
		"kid 2 KB":                 {sign(t, jwa.HS256(), secret, map[string]any{"kid": strings.Repeat("k", 2048)}, good), auth.ErrMalformed},
		"jku to attacker":          {sign(t, jwa.ES256(), k.ec256, map[string]any{"jku": spy.URL + "/jwks"}, good), auth.ErrSignature},
		"x5u to attacker":          {sign(t, jwa.ES256(), k.ec256, map[string]any{"x5u": spy.URL + "/cert"}, good), auth.ErrSignature},
		"embedded jwk":             {sign(t, jwa.ES256(), k.ec256, map[string]any{"jwk": attackerJWK}, good), auth.ErrSignature},
		"x5c with attacker cert":   {signRawES256(t, k.ec256, map[string]any{"alg": "ES256", "x5c": []string{selfSigned(t, k.ec256)}, "x5u": spy.URL + "/x5u"}, good), auth.ErrSignature},
		"crit unknown":             {sign(t, jwa.HS256(), secret, map[string]any{"crit": []string{"exp-custom"}, "exp-custom": 1}, good), auth.ErrMalformed},
		"expired":                  {sign(t, jwa.HS256(), secret, nil, merge(good, "exp", now.Add(-time.Minute).Unix())), auth.ErrExpired},
		"missing exp":              {sign(t, jwa.HS256(), secret, nil, merge(good, "exp", nil)), auth.ErrExpired},
		"exp not a number":         {sign(t, jwa.HS256(), secret, nil, merge(good, "exp", "tomorrow")), auth.ErrMalformed},
		"nbf in the future":        {sign(t, jwa.HS256(), secret, nil, merge(good, "nbf", now.Add(time.Minute).Unix())), auth.ErrNotYetValid},
		"iat beyond skew":          {sign(t, jwa.HS256(), secret, nil, merge(good, "iat", now.Add(time.Hour).Unix())), auth.ErrNotYetValid},
		"wrong iss":                {sign(t, jwa.HS256(), secret, nil, merge(good, "iss", "https://evil.example")), auth.ErrClaims},
		"wrong aud":                {sign(t, jwa.HS256(), secret, nil, merge(good, "aud", "other")), auth.ErrClaims},
		"missing aud":              {sign(t, jwa.HS256(), secret, nil, merge(good, "aud", nil)), auth.ErrClaims},
		"missing user claim":       {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", nil)), auth.ErrClaims},
		"user claim with CRLF":     {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", "alice\r\nX-Admin: 1")), auth.ErrClaims},
		"user claim 257 bytes":     {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", strings.Repeat("a", 257))), auth.ErrClaims},
		"user claim an object":     {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", map[string]any{"id": 1})), auth.ErrClaims},
		"tenant with newline":      {sign(t, jwa.HS256(), secret, nil, merge(good, "tenant_id", "t1\n")), auth.ErrClaims},
		"user claim leading space": {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", " alice")), auth.ErrClaims},
		"user claim trailing tab":  {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", "alice\t")), auth.ErrClaims},
		"tenant trailing space":    {sign(t, jwa.HS256(), secret, nil, merge(good, "tenant_id", "t1 ")), auth.ErrClaims},
		"user claim a boolean":     {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", true)), auth.ErrClaims},
		"tenant a boolean":         {sign(t, jwa.HS256(), secret, nil, merge(good, "tenant_id", false)), auth.ErrClaims},
		"user claim null":          {sign(t, jwa.HS256(), secret, nil, merge(good, "sub", json.RawMessage("null"))), auth.ErrClaims},
		"JWE five segments":        {"eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", auth.ErrMalformed},
		"JSON serialization":       {`{"payload":"e30","signatures":[{"protected":"eyJhbGciOiJIUzI1NiJ9","signature":"x"}]}`, auth.ErrMalformed},
		"1 MB token":               {strings.Repeat("a", 1<<20), auth.ErrMalformed},
		"100000 dots":              {strings.Repeat(".", 100000), auth.ErrMalformed},
		"header not base64":        {"!!!.e30.sig", auth.ErrMalformed},
		"header not JSON":          {base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.sig", auth.ErrMalformed},
		"payload not an object":    {sign(t, jwa.HS256(), secret, nil, nil)[:0] + signPayload(t, []byte(`[1,2]`)), auth.ErrMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("rejected a valid token: %v", err)
				}
				if id.User != "alice" || id.Tenant != "t1" {
					t.Errorf("identity = %q/%q", id.User, id.Tenant)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if len(tc.token) > 20 && strings.Contains(err.Error(), tc.token[:20]) {
				t.Error("error text carries the token")
			}
		})
	}
	if n := fetches.Load(); n != 0 {
		t.Errorf("token headers caused %d outbound fetches, want 0", n)
	}
}

func merge(c map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range c {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func signPayload(t *testing.T, payload []byte) string {
	out, err := jws.Sign(payload, jws.WithKey(jwa.HS256(), secret))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func swapAlg(t *testing.T, tok, alg string) string {
	parts := strings.SplitN(tok, ".", 3)
	h, _ := json.Marshal(map[string]string{"alg": alg})
	return base64.RawURLEncoding.EncodeToString(h) + "." + parts[1] + "." + parts[2]
}

func zeroSig(tok string, n int) string {
	i := strings.LastIndexByte(tok, '.')
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(make([]byte, n))
}

func TestConfigRefusesWeakOrMissingKeys(t *testing.T) {
	cases := map[string]struct {
		cfg     auth.Config
		wantKey string
	}{
		"short secret": {auth.Config{HMACSecret: []byte("too-short")}, "hmac_secret"},
		"no keys":      {auth.Config{}, "hmac_secret"},
		"bad pem":      {auth.Config{PublicKeyFiles: []string{"/nonexistent.pem"}}, "public_keys[0]"},
		"bad jwks url": {auth.Config{JWKSURL: "ftp://x"}, "jwks_url"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := auth.New(tc.cfg, zap.NewNop(), nil)
			var fe *auth.FieldError
			if !errors.As(err, &fe) || fe.Key != tc.wantKey {
				t.Fatalf("err = %v, want a FieldError for %s", err, tc.wantKey)
			}
		})
	}
}

func TestVerifiedTokenCache(t *testing.T) {
	v, reg := newVerifier(t, auth.Config{HMACSecret: secret})
	tok := sign(t, jwa.HS256(), secret, nil, claims(nil))
	for i := 0; i < 3; i++ {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(t, reg, "wsgate_token_cache_hits_total"); got != 2 {
		t.Errorf("cache hits = %v, want 2", got)
	}
	// A tampered token never matches a cached one.
	bad := tok[:len(tok)-2] + "xx"
	if _, err := v.Verify(context.Background(), bad); !errors.Is(err, auth.ErrSignature) {
		t.Errorf("tampered token: %v", err)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	return wstest.Metric(t, reg, name, labels...)
}

// jwksServer serves a mutable JWK Set and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	set     jwk.Set
	fail    bool
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{set: jwk.NewSet()}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(s.set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) publish(t *testing.T, kid string, pub any) {
	k, err := jwk.Import(pub)
	if err != nil {
		t.Fatal(err)
	}
	k.Set(jwk.KeyIDKey, kid)
	s.mu.Lock()
	s.set.AddKey(k)
	s.mu.Unlock()
}

func (s *jwksServer) setFail(f bool) { s.mu.Lock(); s.fail = f; s.mu.Unlock() }

func TestJWKSRotationAndOutage(t *testing.T) {
	keyA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := newJWKSServer(t)
	srv.setFail(true) // down at start: not ready until the first good fetch

	v, reg := newVerifier(t, auth.Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour, JWKSMinRefetch: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	tokA := sign(t, jwa.ES256(), keyA, map[string]any{"kid": "a"}, claims(nil))
	time.Sleep(300 * time.Millisecond)
	if v.Ready() {
		t.Fatal("ready before the JWKS was ever fetched")
	}
	if _, err := v.Verify(context.Background(), tokA); !errors.Is(err, auth.ErrNotReady) {
		t.Fatalf("verify before ready: %v, want ErrNotReady", err)
	}
	srv.publish(t, "a", keyA.PublicKey)
	srv.setFail(false)
	waitFor(t, v.Ready)
	if _, err := v.Verify(context.Background(), tokA); err != nil {
		t.Fatalf("key a: %v", err)
	}

	// Rotation: a token with the new kid triggers one refetch.
	srv.publish(t, "b", keyB.PublicKey)
	time.Sleep(350 * time.Millisecond) // past min refetch since the startup fetch
	before := srv.fetches.Load()
	tokB := sign(t, jwa.ES256(), keyB, map[string]any{"kid": "b"}, claims(map[string]any{"sub": "bob"}))
	if id, err := v.Verify(context.Background(), tokB); err != nil || id.User != "bob" {
		t.Fatalf("rotated key b: %v", err)
	}
	if got := srv.fetches.Load() - before; got != 1 {
		t.Errorf("rotation cost %d fetches, want 1", got)
	}

	// A flood of unknown kids costs at most one fetch per min-refetch period.
	before = srv.fetches.Load()
	for i := 0; i < 50; i++ {
		forged := sign(t, jwa.ES256(), keyB, map[string]any{"kid": "forged-" + string(rune('a'+i%26))}, claims(nil))
		if _, err := v.Verify(context.Background(), forged); !errors.Is(err, auth.ErrSignature) {
			t.Fatalf("forged kid accepted or wrong error: %v", err)
		}
	}
	if got := srv.fetches.Load() - before; got > 1 {
		t.Errorf("50 unknown kids caused %d fetches, want at most 1", got)
	}
	if got := metricValue(t, reg, "wsgate_jwks_refreshes_total", "trigger", "unknown_kid", "result", "rate_limited"); got < 49 {
		t.Errorf("rate-limited refetches counted %v, want >= 49", got)
	}

	// JWKS down: the last good set keeps working.
	srv.setFail(true)
	time.Sleep(350 * time.Millisecond)
	unknown := sign(t, jwa.ES256(), keyA, map[string]any{"kid": "zzz"}, claims(nil))
	v.Verify(context.Background(), unknown) // forces a failing fetch
	if got := metricValue(t, reg, "wsgate_jwks_refreshes_total", "trigger", "unknown_kid", "result", "error"); got != 1 {
		t.Errorf("failed refetches = %v, want 1", got)
	}
	tokA2 := sign(t, jwa.ES256(), keyA, map[string]any{"kid": "a"}, claims(map[string]any{"sub": "carol"}))
	if _, err := v.Verify(context.Background(), tokA2); err != nil {
		t.Errorf("last good keys dropped during an outage: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met in 5s")
}

// signRawES256 signs a hand-built header (so any JOSE field can be set) with
// an attacker's P-256 key.
func signRawES256(t *testing.T, key *ecdsa.PrivateKey, hdr, c map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(hdr)
	p, _ := json.Marshal(c)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	digest := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// selfSigned returns a base64 DER certificate for key, as an x5c entry.
func selfSigned(t *testing.T, key *ecdsa.PrivateKey) string {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func TestExtractRefusesDuplicateCookies(t *testing.T) {
	v, _ := newVerifier(t, auth.Config{HMACSecret: secret, Cookie: "session"})
	cases := map[string]struct {
		cookies []string
		want    error
	}{
		"one cookie":                 {[]string{"session=c00kieval"}, nil},
		"two cookies in one header":  {[]string{"session=c00kieval; session=0therval"}, auth.ErrMalformed},
		"two Cookie headers":         {[]string{"session=c00kieval", "session=0therval"}, auth.ErrMalformed},
		"other cookies are ignored":  {[]string{"a=1; session=c00kieval; b=2"}, nil},
		"empty cookie is no carrier": {[]string{"session="}, auth.ErrNoToken},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/ws", nil)
			for _, c := range tc.cookies {
				r.Header.Add("Cookie", c)
			}
			tok, src, err := v.Extract(r)
			if !errors.Is(err, tc.want) || (tc.want == nil && (tok != "c00kieval" || src != auth.SourceCookie)) {
				t.Fatalf("Extract = %q, %v, %v; want err %v", tok, src, err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), "c00kieval") || strings.Contains(err.Error(), "0therval")) {
				t.Errorf("error carries the cookie value: %v", err)
			}
		})
	}
}
