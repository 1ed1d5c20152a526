package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/internal/zero"
)

// Limits bound what one client, user, tenant or the whole process may take.
// Zero values are the documented defaults; -1 disables a limit.
type Limits struct {
	// MaxConnections caps open connections in the process (503 beyond).
	// Defaults to 10000.
	MaxConnections int
	// MaxConnectionsPerUser caps one user's open connections (429). Defaults to 100.
	MaxConnectionsPerUser int
	// MaxConnectionsPerTenant caps one tenant's open connections (429).
	// Defaults to 5000.
	MaxConnectionsPerTenant int
	// HandshakesPerSecondPerIP limits handshake attempts per client IP
	// (429), with a burst of twice the rate. Defaults to 20.
	HandshakesPerSecondPerIP float64
	// HandshakesPerSecondPerUser limits verified handshakes per user (429),
	// with a burst of twice the rate. Defaults to 10.
	HandshakesPerSecondPerUser float64
	// MessagesPerSecond limits client messages per connection, with a burst
	// of twice the rate; beyond it the client is closed with 1008.
	// Defaults to 100.
	MessagesPerSecond float64
	// ControlFramesPerSecond limits the pings and pongs one peer (client or
	// upstream) sends on its connection, with a burst of twice the rate;
	// beyond it that peer is closed with 1008 "control frame rate
	// exceeded". A browser only answers pings, and a peer's own heartbeat
	// pings every few seconds at most: neither comes near it. Defaults to 10.
	ControlFramesPerSecond float64
	// MaxConcurrentDials caps upstream dials in flight (503 beyond).
	// Defaults to 512.
	MaxConcurrentDials int
	// HandshakeTimeout bounds a whole handshake: verification (including
	// a JWKS refetch), subscription and the upstream dial. Defaults to 15s.
	HandshakeTimeout time.Duration
	// FailedVerificationsPerSecondPerIP limits failed GET /auth/verify
	// checks per client address (429 beyond), with a burst of twice the
	// rate, so the endpoint is no free oracle for guessing tokens. Only
	// failures spend it. Defaults to 5.
	FailedVerificationsPerSecondPerIP float64
	// PublishBytesPerSecond limits what one (tenant, user) publishes on
	// publish routes, over all their connections, in bytes per second,
	// with a burst of twice that (at least max_message_bytes); beyond it
	// the connection is closed with 1008. Defaults to 256 KiB.
	PublishBytesPerSecond float64
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed when
	// deriving the client IP for HandshakesPerSecondPerIP. Defaults to
	// loopback and private ranges (a gateway in the cluster network).
	TrustedProxies []string
}

// Defaults for Limits' zero values.
const (
	DefaultMaxConnections          = 10000
	DefaultMaxConnectionsPerUser   = 100
	DefaultMaxConnectionsPerTenant = 5000
	DefaultHandshakesPerIP         = 20
	DefaultHandshakesPerUser       = 10
	DefaultMessagesPerSecond       = 100
	DefaultControlFramesPerSecond  = 10
	DefaultMaxConcurrentDials      = 512
	DefaultHandshakeTimeout        = 15 * time.Second
	DefaultFailedVerifications     = 5
	DefaultPublishBytesPerSecond   = 256 << 10
)

// DefaultTrustedProxies are the ranges a cluster-internal gateway uses.
var DefaultTrustedProxies = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}

func (l Limits) withDefaults() Limits {
	zero.Default(&l.MaxConnections, DefaultMaxConnections)
	zero.Default(&l.MaxConnectionsPerUser, DefaultMaxConnectionsPerUser)
	zero.Default(&l.MaxConnectionsPerTenant, DefaultMaxConnectionsPerTenant)
	zero.Default(&l.MaxConcurrentDials, DefaultMaxConcurrentDials)
	zero.Default(&l.HandshakesPerSecondPerIP, DefaultHandshakesPerIP)
	zero.Default(&l.HandshakesPerSecondPerUser, DefaultHandshakesPerUser)
	zero.Default(&l.MessagesPerSecond, DefaultMessagesPerSecond)
	zero.Default(&l.ControlFramesPerSecond, DefaultControlFramesPerSecond)
	zero.Default(&l.HandshakeTimeout, DefaultHandshakeTimeout)
	zero.Default(&l.FailedVerificationsPerSecondPerIP, DefaultFailedVerifications)
	zero.Default(&l.PublishBytesPerSecond, DefaultPublishBytesPerSecond)
	if l.TrustedProxies == nil {
		l.TrustedProxies = DefaultTrustedProxies
	}
	return l
}

func (l Limits) validate(bad func(key, format string, args ...any)) {
	for key, v := range map[string]float64{
		"limits.max_connections": float64(l.MaxConnections), "limits.max_connections_per_user": float64(l.MaxConnectionsPerUser),
		"limits.max_connections_per_tenant": float64(l.MaxConnectionsPerTenant), "limits.max_concurrent_dials": float64(l.MaxConcurrentDials),
		"limits.handshakes_per_second_per_ip": l.HandshakesPerSecondPerIP, "limits.handshakes_per_second_per_user": l.HandshakesPerSecondPerUser,
		"limits.messages_per_second": l.MessagesPerSecond, "limits.failed_verifications_per_second_per_ip": l.FailedVerificationsPerSecondPerIP,
		"limits.publish_bytes_per_second": l.PublishBytesPerSecond, "limits.control_frames_per_second": l.ControlFramesPerSecond,
	} {
		if v < 0 && v != -1 {
			bad(key, "must be positive, or -1 to disable")
		}
		if !strings.HasPrefix(key, "limits.max_") { // a rate
			if v > 0 && v < 0.5 {
				bad(key, "must be at least 0.5 (the burst is twice the rate and must hold one token)")
			}
		}
	}
	if l.HandshakeTimeout < 0 {
		bad("limits.handshake_timeout", "must not be negative")
	}
	for i, c := range l.TrustedProxies {
		if _, _, err := net.ParseCIDR(c); err != nil {
			bad(fmt.Sprintf("limits.trusted_proxies[%d]", i), "not a CIDR")
		}
	}
}

// SharedLimits is a fleet-wide view of the per-user and per-tenant caps and
// the handshake rates (limit.Redis implements it over Redis). It is
// consulted after the local limits pass; it fails open when unreachable.
type SharedLimits interface {
	// Allow counts one handshake for key and reports whether it is within perSecond.
	Allow(ctx context.Context, key string, perSecond float64) bool
	// Acquire reserves a connection under each key within the cap at the same
	// index; release frees them.
	Acquire(ctx context.Context, keys []string, caps []int) (release func(), err error)
}

// Limit errors.
var (
	ErrCapacity    = errors.New("connection limit reached")
	ErrUserLimit   = errors.New("too many connections for this user or tenant")
	ErrRateLimited = errors.New("too many handshakes; retry later")
)

// bucket is a token bucket refilled lazily. Not safe for concurrent use.
type bucket struct {
	tokens float64
	last   time.Time
}

// take reports whether one token was available at now.
func (b *bucket) take(now time.Time, rate float64) bool {
	b.refill(now, rate)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (b *bucket) refill(now time.Time, rate float64) {
	burst := 2 * rate
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
}

// keyedBuckets rate-limits per key. Idle keys are swept lazily.
type keyedBuckets struct {
	rate  float64 // -1: unlimited
	mu    sync.Mutex
	m     map[string]*bucket // guarded by mu
	swept time.Time
}

func newKeyedBuckets(rate float64) *keyedBuckets {
	return &keyedBuckets{rate: rate, m: make(map[string]*bucket)}
}

func (k *keyedBuckets) allow(key string, now time.Time) bool {
	if k.rate < 0 {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.bucketLocked(key, now).take(now, k.rate)
}

// exhausted reports whether key's bucket is empty, without taking from it:
// for budgets that only failures spend.
func (k *keyedBuckets) exhausted(key string, now time.Time) bool {
	if k.rate < 0 {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.bucketLocked(key, now)
	b.refill(now, k.rate)
	return b.tokens < 1
}

func (k *keyedBuckets) bucketLocked(key string, now time.Time) *bucket {
	if len(k.m) > 4096 && now.Sub(k.swept) > 10*time.Second {
		// A bucket idle long enough to be full again carries no state.
		full := time.Duration(2 * float64(time.Second))
		for key, b := range k.m {
			if now.Sub(b.last) > full {
				delete(k.m, key)
			}
		}
		k.swept = now
	}
	b := k.m[key]
	if b == nil {
		b = &bucket{}
		k.m[key] = b
	}
	return b
}

// counters tracks open connections per user and tenant and in total.
type counters struct {
	total     atomic.Int64
	mu        sync.Mutex
	perUser   map[string]int // guarded by mu; keyed by userKey
	perTenant map[string]int // guarded by mu
}

// userKey names a user within its tenant: alice of acme and alice of
// globex are two users, with their own caps and handshake rates. The
// length prefix keeps any two (tenant, user) pairs apart.
func userKey(tenant, user string) string {
	return strconv.Itoa(len(tenant)) + ":" + tenant + ":" + user
}

// acquire reserves a connection slot; release must follow if it succeeds.
func (c *counters) acquire(l *Limits, user, tenant string) error {
	if n := c.total.Add(1); l.MaxConnections > 0 && n > int64(l.MaxConnections) {
		c.total.Add(-1)
		return ErrCapacity
	}
	user = userKey(tenant, user)
	c.mu.Lock()
	defer c.mu.Unlock()
	if l.MaxConnectionsPerUser > 0 && c.perUser[user] >= l.MaxConnectionsPerUser ||
		tenant != "" && l.MaxConnectionsPerTenant > 0 && c.perTenant[tenant] >= l.MaxConnectionsPerTenant {
		c.total.Add(-1)
		return ErrUserLimit
	}
	c.perUser[user]++
	if tenant != "" {
		c.perTenant[tenant]++
	}
	return nil
}

func (c *counters) release(user, tenant string) {
	user = userKey(tenant, user)
	c.total.Add(-1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.perUser[user]--; c.perUser[user] <= 0 {
		delete(c.perUser, user)
	}
	if tenant != "" {
		if c.perTenant[tenant]--; c.perTenant[tenant] <= 0 {
			delete(c.perTenant, tenant)
		}
	}
}

// clientAddr derives the client IP when the peer itself is a trusted proxy:
// the rightmost X-Forwarded-For entry not in a trusted range or, when every
// hop back to the first unparseable one is trusted, the leftmost of them.
// That one is the original client, an intranet user inside a trusted range
// (the default ranges are the private ones); keying on the peer instead
// would put every such user in the gateway's one bucket.
func clientAddr(r *http.Request, trusted []*net.IPNet) string {
	peer := clientIP(r)
	ip := net.ParseIP(peer)
	if ip == nil || !inNets(ip, trusted) {
		return peer
	}
	key := peer
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := net.ParseIP(strings.TrimSpace(hops[i]))
		if h == nil {
			break
		}
		if !inNets(h, trusted) {
			return h.String()
		}
		key = h.String()
	}
	return key
}

func inNets(ip net.IP, nets []*net.IPNet) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func parseCIDRs(list []string) []*net.IPNet {
	var out []*net.IPNet
	for _, c := range list {
		if _, n, err := net.ParseCIDR(c); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// allowIP counts one handshake for the client address of r against the
// per-IP rate, locally and (with shared limits) fleet-wide.
func (h *Handler) allowIP(ctx context.Context, r *http.Request) error {
	addr, rate := clientAddr(r, h.trusted), h.cfg.Limits.HandshakesPerSecondPerIP
	if !h.ipRate.allow(addr, time.Now()) || h.shared != nil && rate > 0 && !h.shared.Allow(ctx, "ip:"+addr, rate) {
		return fmt.Errorf("%w (client address)", ErrRateLimited)
	}
	return nil
}

// allowUser counts one handshake (or ticket, or resume) for user, a
// userKey, against the per-user rate, locally and fleet-wide.
func (h *Handler) allowUser(ctx context.Context, user string) error {
	rate := h.cfg.Limits.HandshakesPerSecondPerUser
	if !h.userRate.allow(user, time.Now()) || h.shared != nil && rate > 0 && !h.shared.Allow(ctx, "user:"+user, rate) {
		return fmt.Errorf("%w (user)", ErrRateLimited)
	}
	return nil
}
