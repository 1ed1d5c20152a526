package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// MaxIdentityBytes bounds the user and tenant values that become upstream
// headers and channel names.
const MaxIdentityBytes = 256

// Identity is what a verified token says about its bearer. It never holds the
// token itself.
type Identity struct {
	User   string
	Tenant string
	// Expiry is the exp claim. The token is usable until Expiry plus the leeway.
	Expiry time.Time
	// Claims holds every claim, decoded with json.Number for numbers.
	Claims map[string]any
}

// ClaimValues returns the string forms of a claim that is a string, a number,
// a bool or an array of those. Other shapes yield nothing.
func (id *Identity) ClaimValues(name string) []string {
	switch v := id.Claims[name].(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := scalar(e); ok {
				out = append(out, s)
			}
		}
		return out
	default:
		if s, ok := scalar(v); ok {
			return []string{s}
		}
	}
	return nil
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// Verifier checks tokens against the configured keys. It is safe for
// concurrent use. Run keeps a remote JWKS fresh; without a JWKS, Run only
// waits for its context.
type Verifier struct {
	// Static after construction.
	cfg     Config
	static  keySet
	log     *zap.Logger
	metrics *metrics
	now     func() time.Time
	jwks    *jwksSource // nil without auth.jwks_url

	// keys is static plus the last good JWKS; nil until ready.
	keys atomic.Pointer[keySet]

	cache tokenCache
}

// New builds a Verifier. Static keys are loaded now; a JWKS is first fetched
// by Run, and Ready turns true after that.
//
// log and reg may be nil.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Verifier, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	static, err := staticKeys(cfg)
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		cfg:     cfg,
		static:  static,
		log:     log,
		metrics: newMetrics(reg),
		now:     time.Now,
	}
	v.cache.init(cfg.CacheSize)
	if cfg.JWKSURL != "" {
		v.jwks = newJWKSSource(cfg, log, v.metrics)
	} else {
		v.keys.Store(&v.static)
	}
	return v, nil
}

// Ready reports whether tokens can be verified: static keys are loaded and a
// configured JWKS has been fetched at least once.
func (v *Verifier) Ready() bool { return v.keys.Load() != nil }

// Leeway is the configured clock skew allowance.
func (v *Verifier) Leeway() time.Duration { return v.cfg.Leeway }

// Run fetches and refreshes the JWKS until ctx ends. It returns nil when ctx
// ends; a JWKS that cannot be fetched keeps the Verifier unready (or keeps the
// last good set) rather than failing Run.
func (v *Verifier) Run(ctx context.Context) error {
	if v.jwks == nil {
		<-ctx.Done()
		return nil
	}
	return v.jwks.run(ctx, v.publish)
}

func (v *Verifier) publish(remote keySet) {
	ks := make(keySet, 0, len(v.static)+len(remote))
	ks = append(append(ks, v.static...), remote...)
	v.keys.Store(&ks)
}

// header is the part of the JOSE header wsgate looks at. jku, x5u, jwk and
// x5c are deliberately absent: keys never come from the token.
type header struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

// Verify checks raw and returns the identity it carries.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	if raw == "" {
		return nil, ErrNoToken
	}
	if len(raw) > v.cfg.MaxTokenBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, v.cfg.MaxTokenBytes)
	}
	if strings.Count(raw, ".") != 2 {
		// JWE (5 segments), JSON serialization and junk all stop here, cheaply.
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}
	now := v.now()
	sum := sha256.Sum256([]byte(raw))
	if id, ok := v.cache.get(sum, now); ok {
		v.metrics.cacheHits.Inc()
		return id, nil
	}
	id, err := v.verify(ctx, raw, now)
	if err != nil {
		return nil, err
	}
	v.cache.put(sum, id, now, v.cfg.Leeway)
	return id, nil
}

func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Identity, error) {
	hdrSeg, rest, _ := strings.Cut(raw, ".")
	hb, err := base64.RawURLEncoding.DecodeString(hdrSeg)
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: header is not JSON", ErrMalformed)
	}
	if len(h.Crit) > 0 {
		return nil, fmt.Errorf("%w: crit header extensions are not supported", ErrMalformed)
	}
	alg, ok := jwa.LookupSignatureAlgorithm(h.Alg)
	if !ok || alg == jwa.NoSignature() {
		return nil, fmt.Errorf("%w: algorithm not accepted", ErrSignature)
	}
	if len(h.Kid) > 256 {
		return nil, fmt.Errorf("%w: kid too long", ErrMalformed)
	}
	if strings.IndexByte(rest, '.') < 0 {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrMalformed)
	}

	ks := v.keys.Load()
	if ks == nil {
		return nil, ErrNotReady
	}
	cands, hasKid := ks.match(alg, h.Kid)
	if !hasKid && h.Kid != "" && v.jwks != nil {
		// Key rotation: an unknown kid may be a key published since the last
		// refresh. jwksSource rate-limits these fetches.
		if v.jwks.refetch(ctx, v.publish) {
			cands, _ = v.keys.Load().match(alg, h.Kid)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: no key for this algorithm and kid", ErrSignature)
	}
	var payload []byte
	for _, k := range cands {
		if payload, err = jws.VerifyCompactFast(k.raw, []byte(raw), alg); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: verification failed", ErrSignature)
	}
	return v.claims(payload, now)
}

func (v *Verifier) claims(payload []byte, now time.Time) (*Identity, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	leeway := v.cfg.Leeway

	exp, ok, err := numericDate(claims, "exp")
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, fmt.Errorf("%w: exp claim is required", ErrExpired)
	case now.After(exp.Add(leeway)):
		return nil, ErrExpired
	}
	if nbf, ok, err := numericDate(claims, "nbf"); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(nbf) {
		return nil, fmt.Errorf("%w: nbf is in the future", ErrNotYetValid)
	}
	if iat, ok, err := numericDate(claims, "iat"); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(iat) {
		return nil, fmt.Errorf("%w: iat is in the future", ErrNotYetValid)
	}
	if v.cfg.Issuer != "" {
		if iss, _ := claims["iss"].(string); iss != v.cfg.Issuer {
			return nil, fmt.Errorf("%w: iss does not match", ErrClaims)
		}
	}
	if len(v.cfg.Audience) > 0 && !audienceMatches(claims["aud"], v.cfg.Audience) {
		return nil, fmt.Errorf("%w: aud does not match", ErrClaims)
	}
	id := &Identity{Expiry: exp, Claims: claims}
	user, ok := identityScalar(claims[v.cfg.UserClaim])
	if !ok || !validIdentityValue(user) {
		return nil, fmt.Errorf("%w: user claim %q missing or unusable", ErrClaims, v.cfg.UserClaim)
	}
	id.User = user
	if t, present := claims[v.cfg.TenantClaim]; present {
		tenant, ok := identityScalar(t)
		if !ok || !validIdentityValue(tenant) {
			return nil, fmt.Errorf("%w: tenant claim %q unusable", ErrClaims, v.cfg.TenantClaim)
		}
		id.Tenant = tenant
	}
	return id, nil
}

// identityScalar reads an identity claim: a string or a number, as
// documented. A bool, null, array or object is no identity.
func identityScalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	}
	return "", false
}

// validIdentityValue accepts what can safely become an HTTP header value and
// part of a channel name: non-empty, bounded, valid UTF-8, no control bytes,
// and no leading or trailing whitespace. HTTP trims header values, so " alice"
// and "alice" would reach the upstream as the same user.
func validIdentityValue(s string) bool {
	if s == "" || len(s) > MaxIdentityBytes || !utf8.ValidString(s) {
		return false
	}
	if strings.TrimSpace(s) != s {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	raw, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, isNum := raw.(json.Number)
	f, err := n.Float64()
	if !isNum || err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e12 {
		return time.Time{}, false, fmt.Errorf("%w: %s is not a NumericDate", ErrMalformed, name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

func audienceMatches(aud any, want []string) bool {
	var have []string
	switch a := aud.(type) {
	case string:
		have = []string{a}
	case []any:
		for _, e := range a {
			if s, ok := e.(string); ok {
				have = append(have, s)
			}
		}
	}
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// tokenCache remembers verified tokens by SHA-256 so a reconnect storm with
// the same tokens skips signature checks. Entries live until the token
// expires or cacheTTL passes, whichever is first, so a key removed from the
// JWKS stops being honoured within cacheTTL.
type tokenCache struct {
	max int
	mu  sync.Mutex
	m   map[[32]byte]cacheEntry // guarded by mu
}

const cacheTTL = 2 * time.Minute

type cacheEntry struct {
	id    *Identity
	until time.Time
}

func (c *tokenCache) init(max int) {
	c.max = max
	if max > 0 {
		c.m = make(map[[32]byte]cacheEntry, min(max, 1024))
	}
}

func (c *tokenCache) get(sum [32]byte, now time.Time) (*Identity, bool) {
	if c.max <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[sum]
	if ok && now.After(e.until) {
		delete(c.m, sum) // expired entries go as soon as they are asked for
		return nil, false
	}
	return e.id, ok
}

func (c *tokenCache) put(sum [32]byte, id *Identity, now time.Time, leeway time.Duration) {
	if c.max <= 0 {
		return
	}
	until := id.Expiry.Add(leeway)
	if cap := now.Add(cacheTTL); cap.Before(until) {
		until = cap
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		for k := range c.m { // map order is random: this evicts arbitrary entries
			delete(c.m, k)
			if len(c.m) < c.max*9/10 {
				break
			}
		}
	}
	c.m[sum] = cacheEntry{id: id, until: until}
	c.mu.Unlock()
}
