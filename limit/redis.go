// Package limit shares wsgate's per-user and per-tenant connection caps and
// its handshake rates across replicas through Redis. Each replica still
// enforces its own local limits; this adds the fleet-wide view. When Redis is
// unreachable it fails open (and counts it): availability over strictness.
package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// Lease is how long a replica's connection entry lives without a refresh;
// a crashed replica's connections stop counting within it.
const Lease = 30 * time.Second

// Redis keeps, per key, a sorted set of live connections (member: replica
// and connection id; score: lease expiry), and fixed one-second windows of
// handshake counts. Run owns the client and the lease refresh. Safe for
// concurrent use.
type Redis struct {
	// Static after construction.
	opt     rueidis.ClientOption
	replica string
	log     *zap.Logger
	errs    prometheus.Counter

	client atomic.Pointer[rueidis.Client]
	seq    atomic.Uint64

	mu   sync.Mutex
	live map[string]map[string]struct{} // guarded by mu: key -> members this replica holds
}

// New prepares a limiter for the Redis at url; nothing is dialled until Run.
// log and reg may be nil.
func New(url string, log *zap.Logger, reg prometheus.Registerer) (*Redis, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.DisableCache = true
	var b [6]byte
	_, _ = rand.Read(b[:])
	r := &Redis{
		opt:     opt,
		replica: hex.EncodeToString(b[:]),
		log:     log,
		live:    make(map[string]map[string]struct{}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsgate_shared_limit_errors_total",
			Help: "Shared (Redis) limit checks that failed and were let through.",
		}),
	}
	if reg != nil {
		reg.MustRegister(r.errs)
	}
	return r, nil
}

// Ready reports whether the limiter has a Redis client; until then every
// shared check passes.
func (r *Redis) Ready() bool { return r.client.Load() != nil }

// Run connects (retrying) and refreshes this replica's leases until ctx ends.
func (r *Redis) Run(ctx context.Context) error {
	defer func() {
		if c := r.client.Load(); c != nil {
			(*c).Close()
		}
	}()
	t := time.NewTicker(Lease / 3)
	defer t.Stop()
	for {
		if r.client.Load() == nil {
			if c, err := rueidis.NewClient(r.opt); err == nil {
				r.client.Store(&c)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.refresh(ctx)
		}
	}
}

func (r *Redis) refresh(ctx context.Context) {
	c := r.client.Load()
	if c == nil {
		return
	}
	cl := *c
	exp := float64(time.Now().Add(Lease).UnixMilli())
	r.mu.Lock()
	cmds := make(rueidis.Commands, 0, 2*len(r.live))
	for key, members := range r.live {
		// A plain ZADD re-creates a key that expired meanwhile, and the
		// PEXPIRE keeps it alive as long as this replica holds members.
		for m := range members {
			cmds = append(cmds, cl.B().Zadd().Key(key).ScoreMember().ScoreMember(exp, m).Build())
		}
		cmds = append(cmds, cl.B().Pexpire().Key(key).Milliseconds((2 * Lease).Milliseconds()).Build())
	}
	r.mu.Unlock()
	for _, res := range cl.DoMulti(ctx, cmds...) {
		if res.Error() != nil {
			r.errs.Inc()
		}
	}
}

// allowScript counts a handshake in the current window of ARGV[1] ms and
// reports whether the count is within ARGV[2].
var allowScript = rueidis.NewLuaScript(`
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return 0 end
return 1
`)

// Allow counts one handshake for key and reports whether it is within
// perSecond, over two-second windows (a burst of twice the rate).
func (r *Redis) Allow(ctx context.Context, key string, perSecond float64) bool {
	c := r.client.Load()
	if c == nil || perSecond <= 0 {
		return true
	}
	window := time.Now().Unix() / 2
	k := "wsgate:rate:{" + key + "}:" + strconv.FormatInt(window, 10)
	n, err := allowScript.Exec(ctx, *c, []string{k}, []string{"2500", strconv.Itoa(int(2 * perSecond))}).AsInt64()
	if err != nil {
		r.errs.Inc()
		return true
	}
	return n == 1
}

// acquireScript drops expired entries, and adds ARGV[3] if fewer than
// ARGV[1] remain.
var acquireScript = rueidis.NewLuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// ErrLimit is returned by Acquire when a key is at its cap fleet-wide.
var ErrLimit = errors.New("limit: fleet-wide connection cap reached")

// Acquire reserves one connection under every key (with the cap at the same
// index; a cap <= 0 skips the key). On success release frees them.
func (r *Redis) Acquire(ctx context.Context, keys []string, caps []int) (release func(), err error) {
	c := r.client.Load()
	if c == nil {
		return func() {}, nil
	}
	cl := *c
	member := r.replica + ":" + strconv.FormatUint(r.seq.Add(1), 10)
	now := time.Now()
	var held []string
	release = func() { r.release(held, member) }
	for i, key := range keys {
		if caps[i] <= 0 {
			continue
		}
		k := "wsgate:conns:{" + key + "}"
		n, err := acquireScript.Exec(ctx, cl, []string{k}, []string{
			strconv.Itoa(caps[i]), strconv.FormatInt(now.UnixMilli(), 10), member,
			strconv.FormatInt(now.Add(Lease).UnixMilli(), 10), strconv.FormatInt((2 * Lease).Milliseconds(), 10),
		}).AsInt64()
		if err != nil {
			r.errs.Inc()
			continue // fail open for this key
		}
		if n == 0 {
			release()
			return nil, ErrLimit
		}
		held = append(held, k)
		r.mu.Lock()
		if r.live[k] == nil {
			r.live[k] = make(map[string]struct{})
		}
		r.live[k][member] = struct{}{}
		r.mu.Unlock()
	}
	return release, nil
}

func (r *Redis) release(keys []string, member string) {
	r.mu.Lock()
	for _, k := range keys {
		delete(r.live[k], member)
		if len(r.live[k]) == 0 {
			delete(r.live, k)
		}
	}
	r.mu.Unlock()
	c := r.client.Load()
	if c == nil || len(keys) == 0 {
		return
	}
	cl := *c
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cmds := make(rueidis.Commands, 0, len(keys))
	for _, k := range keys {
		cmds = append(cmds, cl.B().Zrem().Key(k).Member(member).Build())
	}
	for _, res := range cl.DoMulti(ctx, cmds...) {
		if res.Error() != nil {
			r.errs.Inc()
		}
	}
}
