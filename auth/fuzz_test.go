package auth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/auth"
)

// fuzzSecret signs the valid seeds in testdata/fuzz/FuzzVerify.
const fuzzSecret = "fuzz-secret-0123456789abcdef-0123456789abcdef"

const fuzzCookie = "wsgate_token"

var sentinels = []error{
	auth.ErrNoToken, auth.ErrMalformed, auth.ErrSignature, auth.ErrExpired,
	auth.ErrNotYetValid, auth.ErrClaims, auth.ErrNotReady,
}

// checkSentinel fails unless err wraps exactly one of auth's sentinels.
func checkSentinel(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %q wraps %d sentinels, want exactly 1", err, n)
	}
}

// checkNoEcho fails if err's text repeats any of the inputs that could hold
// a secret. Only values of 16+ bytes without a space are checked: shorter
// ones, or ones with spaces, can occur in the fixed error messages by chance.
func checkNoEcho(t *testing.T, err error, inputs ...string) {
	t.Helper()
	msg := err.Error()
	for _, in := range inputs {
		for _, word := range strings.FieldsFunc(in, func(r rune) bool { return r == ' ' || r == '.' || r == ',' || r == '&' || r == '=' || r == ';' }) {
			if len(word) >= 16 && strings.Contains(msg, word) {
				t.Fatalf("error text %q contains input %q", msg, word)
			}
		}
	}
}

func fuzzVerifier(t testing.TB) *auth.Verifier {
	v, err := auth.New(auth.Config{HMACSecret: []byte(fuzzSecret), Cookie: fuzzCookie, CacheSize: -1}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// lines splits a fuzzed header into values, so one input can stand for
// several header lines ("a\nb" is two Authorization headers).
func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func FuzzExtract(f *testing.F) {
	v := fuzzVerifier(f)
	prefix := auth.DefaultSubprotocolPrefix
	f.Fuzz(func(t *testing.T, rawQuery, authz, protocols, cookie string) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/ws", RawQuery: rawQuery}, Header: http.Header{}}
		for _, a := range lines(authz) {
			r.Header.Add("Authorization", a)
		}
		for _, p := range lines(protocols) {
			r.Header.Add("Sec-WebSocket-Protocol", p)
		}
		if cookie != "" {
			r.Header.Set("Cookie", cookie)
		}

		tok, src, err := v.Extract(r)
		if err != nil {
			checkSentinel(t, err)
			if !errors.Is(err, auth.ErrNoToken) && !errors.Is(err, auth.ErrMalformed) {
				t.Fatalf("Extract error %q is neither ErrNoToken nor ErrMalformed", err)
			}
			checkNoEcho(t, err, rawQuery, authz, protocols, cookie)
			if tok != "" {
				t.Fatalf("Extract returned token %q with error %v", tok, err)
			}
			return
		}
		if tok == "" {
			t.Fatalf("Extract returned an empty token from %v without an error", src)
		}
		// Precedence: a present Authorization header decides, whatever it holds.
		if len(r.Header.Values("Authorization")) > 0 && src != auth.SourceHeader {
			t.Fatalf("Authorization present but token taken from %v", src)
		}
		switch src {
		case auth.SourceHeader:
			if !strings.Contains(authz, tok) || strings.ContainsAny(tok, "\n") {
				t.Fatalf("header token %q is not part of Authorization %q", tok, authz)
			}
		case auth.SourceQuery:
			if !fromQuery(rawQuery, auth.DefaultQueryParam, tok) {
				t.Fatalf("query token %q is not the %q value of %q", tok, auth.DefaultQueryParam, rawQuery)
			}
		case auth.SourceSubprotocol:
			if !fromSubprotocol(r.Header, prefix, tok) {
				t.Fatalf("subprotocol token %q is not carried by %q", tok, protocols)
			}
			for _, p := range v.Subprotocols(r.Header) {
				if strings.HasPrefix(p, prefix) {
					t.Fatalf("Subprotocols kept the token entry %q", p)
				}
			}
		case auth.SourceCookie:
			if !strings.Contains(cookie, tok) {
				t.Fatalf("cookie token %q is not part of Cookie %q", tok, cookie)
			}
		default:
			t.Fatalf("token %q from source %v", tok, src)
		}
		// StripQuery must remove every copy of the parameter.
		if src == auth.SourceQuery && fromQuery(v.StripQuery(rawQuery), auth.DefaultQueryParam, tok) {
			t.Fatalf("StripQuery(%q) kept the token", rawQuery)
		}
	})
}

func fromQuery(rawQuery, param, tok string) bool {
	for _, part := range strings.Split(rawQuery, "&") {
		k, val, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(val)
		if err1 == nil && err2 == nil && key == param && value == tok {
			return true
		}
	}
	return false
}

func fromSubprotocol(h http.Header, prefix, tok string) bool {
	for _, line := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(line, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), prefix)
			if !ok {
				continue
			}
			if b, err := base64.RawURLEncoding.DecodeString(enc); err == nil && string(b) == tok {
				return true
			}
		}
	}
	return false
}

func FuzzVerify(f *testing.F) {
	v := fuzzVerifier(f)
	f.Fuzz(func(t *testing.T, raw string) {
		start := time.Now()
		id, err := v.Verify(context.Background(), raw)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Verify took %v on %d bytes", d, len(raw))
		}
		if err != nil {
			checkSentinel(t, err)
			checkNoEcho(t, err, raw)
			if id != nil {
				t.Fatalf("Verify returned an identity with error %v", err)
			}
			return
		}
		checkAccepted(t, raw, id)
	})
}

// FuzzVerifySigned signs fuzzed header and payload JSON with the configured
// secret, so the claim checks behind the signature get explored too.
func FuzzVerifySigned(f *testing.F) {
	v := fuzzVerifier(f)
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		raw := signHMAC(header, payload)
		id, err := v.Verify(context.Background(), raw)
		if err != nil {
			checkSentinel(t, err)
			checkNoEcho(t, err, string(payload))
			return
		}
		checkAccepted(t, raw, id)
	})
}

// signHMAC builds a compact JWS over header and payload as given, signed with
// the HMAC hash the header's alg names (SHA-256 if it names none).
func signHMAC(header, payload []byte) string {
	var h struct {
		Alg string `json:"alg"`
	}
	json.Unmarshal(header, &h)
	newHash := sha256.New
	switch h.Alg {
	case "HS384":
		newHash = sha512.New384
	case "HS512":
		newHash = sha512.New
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(mac(newHash, []byte(input)))
}

func mac(newHash func() hash.Hash, input []byte) []byte {
	m := hmac.New(newHash, []byte(fuzzSecret))
	m.Write(input)
	return m.Sum(nil)
}

// checkAccepted: a token Verify accepted must verify with jwx on its own,
// and the identity must satisfy the documented guarantees.
func checkAccepted(t *testing.T, raw string, id *auth.Identity) {
	t.Helper()
	ok := false
	for _, alg := range []jwa.SignatureAlgorithm{jwa.HS256(), jwa.HS384(), jwa.HS512()} {
		if _, err := jws.Verify([]byte(raw), jws.WithKey(alg, []byte(fuzzSecret))); err == nil {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatalf("Verify accepted %q, which jwx does not verify with the secret", raw)
	}
	if id == nil || id.User == "" || len(id.User) > auth.MaxIdentityBytes || !utf8.ValidString(id.User) || hasControl(id.User) {
		t.Fatalf("accepted token yields unusable identity %+v", id)
	}
	if len(id.Tenant) > auth.MaxIdentityBytes || !utf8.ValidString(id.Tenant) || hasControl(id.Tenant) {
		t.Fatalf("accepted token yields unusable tenant %q", id.Tenant)
	}
	if !id.Expiry.After(time.Now().Add(-time.Minute)) {
		t.Fatalf("accepted token expired at %v", id.Expiry)
	}
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
