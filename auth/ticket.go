package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsgate/wsgate/internal/query"
)

// Ticket errors.
var (
	// ErrTicket: the ticket is unknown, already used or expired.
	ErrTicket = errors.New("unknown, used or expired ticket")
	// ErrTicketStore: the ticket store is full or unreachable.
	ErrTicketStore = errors.New("ticket store unavailable")
)

// TicketConfig configures Tickets. Zero values are defaults.
type TicketConfig struct {
	// Param is the upgrade's query parameter carrying a ticket. Defaults to "ticket".
	Param string
	// TTL is how long an unused ticket lives; never past the token's exp.
	// Defaults to 30s.
	TTL time.Duration
	// MaxMemory bounds the tickets the in-memory store holds. Defaults to 100000.
	MaxMemory int
}

// Defaults for TicketConfig's zero values.
const (
	DefaultTicketParam     = "ticket"
	DefaultTicketTTL       = 30 * time.Second
	DefaultTicketMaxMemory = 100000
	// MaxTicketTTL bounds auth.ticket_ttl: a ticket is meant to be spent at once.
	MaxTicketTTL = 5 * time.Minute
	// ticketBytes of randomness make a ticket: 256 bits, unguessable.
	ticketBytes = 32
)

// Validate reports every problem in c, each as a *FieldError keyed as the
// config file's auth section spells it.
func (c TicketConfig) Validate() error {
	var errs []error
	if c.TTL < 0 || c.TTL > MaxTicketTTL {
		errs = append(errs, &FieldError{Key: "ticket_ttl", Err: fmt.Errorf("must be between 0 and %s", MaxTicketTTL)})
	}
	if c.Param != "" && !plainName(c.Param) {
		errs = append(errs, &FieldError{Key: "ticket_param", Err: errors.New("must be a plain query parameter name")})
	}
	if c.MaxMemory < 0 {
		errs = append(errs, &FieldError{Key: "ticket_max_memory", Err: errors.New("must not be negative")})
	}
	return errors.Join(errs...)
}

// TicketStore keeps tickets: Put stores value under key unless key exists;
// Take returns the value and deletes it in one step, so a ticket is spent
// at most once even when two replicas race to redeem it.
type TicketStore interface {
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Take returns ErrTicket when key is absent or expired.
	Take(ctx context.Context, key string) ([]byte, error)
}

// Tickets issues and redeems one-time connection tickets: an opaque random
// value that stands for a verified token for a few seconds, so the token
// never has to appear in a WebSocket URL. The stored value is the token
// itself: the redeeming handshake re-verifies it (a cache hit), which
// rebuilds exactly the identity a token handshake gets and gives the
// upstream the same Authorization header. Safe for concurrent use.
type Tickets struct {
	// Static after construction.
	cfg   TicketConfig
	store TicketStore
	now   func() time.Time
}

// NewTickets returns Tickets over store (NewMemoryTickets or a RedisTickets).
func NewTickets(cfg TicketConfig, store TicketStore) (*Tickets, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Param == "" {
		cfg.Param = DefaultTicketParam
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTicketTTL
	}
	return &Tickets{cfg: cfg, store: store, now: time.Now}, nil
}

// Param is the query parameter a ticket travels in.
func (t *Tickets) Param() string { return t.cfg.Param }

// Issue stores a fresh ticket for token, whose verified identity is id, and
// returns it with its lifetime: TTL, or less when the token expires sooner.
func (t *Tickets) Issue(ctx context.Context, token string, id *Identity) (string, time.Duration, error) {
	ttl := t.cfg.TTL
	if left := id.Expiry.Sub(t.now()); left < ttl {
		ttl = left
	}
	if ttl < time.Second {
		return "", 0, ErrExpired // a ticket that dies before it can be used
	}
	var b [ticketBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrTicketStore, err)
	}
	ticket := base64.RawURLEncoding.EncodeToString(b[:])
	if err := t.store.Put(ctx, ticketKey(ticket), []byte(token), ttl); err != nil {
		return "", 0, err
	}
	return ticket, ttl, nil
}

// Redeem spends ticket and returns the token it stands for.
func (t *Tickets) Redeem(ctx context.Context, ticket string) (string, error) {
	if len(ticket) != base64.RawURLEncoding.EncodedLen(ticketBytes) {
		return "", ErrTicket
	}
	if _, err := base64.RawURLEncoding.DecodeString(ticket); err != nil {
		return "", ErrTicket
	}
	v, err := t.store.Take(ctx, ticketKey(ticket))
	if err != nil {
		return "", err
	}
	return string(v), nil
}

// FromRequest returns the ticket a handshake carries in its query, if any.
// Two tickets, or one that is not URL-encoded, are malformed.
func (t *Tickets) FromRequest(r *http.Request) (ticket string, found bool, err error) {
	vals, ok := query.Values(r.URL.RawQuery, t.cfg.Param)
	switch {
	case !ok:
		return "", true, fmt.Errorf("%w: ticket is not URL-encoded", ErrMalformed)
	case len(vals) == 0:
		return "", false, nil
	case len(vals) > 1:
		return "", true, fmt.Errorf("%w: more than one %q query parameter", ErrMalformed, t.cfg.Param)
	}
	return vals[0], true, nil
}

// ticketKey is what a store files a ticket under: its hash, so a store's
// keys (a Redis KEYS or a memory dump) are not themselves usable tickets.
func ticketKey(ticket string) string {
	h := sha256.Sum256([]byte(ticket))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// MemoryTickets is a TicketStore in process memory, for a single replica.
// It holds at most max tickets; expired ones are swept on every Put once a
// TTL has passed since the last sweep, and at once when it is full, so it
// needs no goroutine. Safe for concurrent use.
type MemoryTickets struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	m     map[string]memoryTicket // guarded by mu
	swept time.Time               // guarded by mu
}

type memoryTicket struct {
	value   []byte
	expires time.Time
}

// NewMemoryTickets returns an empty in-memory store holding at most max
// tickets (DefaultTicketMaxMemory when max <= 0).
func NewMemoryTickets(max int) *MemoryTickets {
	if max <= 0 {
		max = DefaultTicketMaxMemory
	}
	return &MemoryTickets{max: max, now: time.Now, m: make(map[string]memoryTicket)}
}

// Put stores value under key for ttl.
func (s *MemoryTickets) Put(_ context.Context, key string, value []byte, ttl time.Duration) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.swept) >= ttl || len(s.m) >= s.max {
		s.sweepLocked(now)
	}
	if len(s.m) >= s.max {
		return fmt.Errorf("%w: %d unused tickets held", ErrTicketStore, len(s.m))
	}
	if _, ok := s.m[key]; ok {
		return fmt.Errorf("%w: ticket collision", ErrTicketStore)
	}
	s.m[key] = memoryTicket{value: value, expires: now.Add(ttl)}
	return nil
}

// Take returns and deletes the value under key.
func (s *MemoryTickets) Take(_ context.Context, key string) ([]byte, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return nil, ErrTicket
	}
	delete(s.m, key)
	if !now.Before(e.expires) {
		return nil, ErrTicket
	}
	return e.value, nil
}

// Len is the number of tickets held, expired ones included until swept.
func (s *MemoryTickets) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func (s *MemoryTickets) sweepLocked(now time.Time) {
	for k, e := range s.m {
		if !now.Before(e.expires) {
			delete(s.m, k)
		}
	}
	s.swept = now
}

// RedisTickets is a TicketStore in Redis, shared by every replica: SET NX
// PX on issue, GETDEL on redeem. Run owns the client: it connects
// (retrying) and closes it when its context ends; a Put or Take that comes
// before Run has connected tries once itself. Until connected, Put and
// Take fail with ErrTicketStore. Safe for concurrent use.
type RedisTickets struct {
	opt rueidis.ClientOption

	mu      sync.Mutex
	client  atomic.Pointer[rueidis.Client] // stored under mu
	closed  bool                           // guarded by mu: Run has ended
	lastTry time.Time                      // guarded by mu: a down Redis is dialled at most once a second
}

// NewRedisTickets prepares a store for the Redis at url; nothing is dialled
// until Run (or the first Put or Take).
func NewRedisTickets(url string) (*RedisTickets, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.DisableCache = true
	return &RedisTickets{opt: opt}, nil
}

// Run connects (retrying every second) and holds the client until ctx
// ends, then closes it.
func (s *RedisTickets) Run(ctx context.Context) error {
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed = true
		if c := s.client.Swap(nil); c != nil {
			(*c).Close()
		}
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if _, err := s.connect(); err == nil {
			<-ctx.Done()
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// connect returns the client, dialling it if there is none yet.
func (s *RedisTickets) connect() (rueidis.Client, error) {
	if c := s.client.Load(); c != nil {
		return *c, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.client.Load(); c != nil {
		return *c, nil
	}
	if s.closed {
		return nil, fmt.Errorf("%w: closed", ErrTicketStore)
	}
	if time.Since(s.lastTry) < time.Second {
		return nil, fmt.Errorf("%w: redis not connected", ErrTicketStore)
	}
	s.lastTry = time.Now()
	c, err := rueidis.NewClient(s.opt)
	if err != nil {
		return nil, fmt.Errorf("%w: redis not connected", ErrTicketStore)
	}
	s.client.Store(&c)
	return c, nil
}

// Ready reports whether the store has connected.
func (s *RedisTickets) Ready() bool { return s.client.Load() != nil }

const redisTicketPrefix = "wsgate:ticket:"

// Put stores value under key for ttl unless key exists.
func (s *RedisTickets) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	cl, err := s.connect()
	if err != nil {
		return err
	}
	err = cl.Do(ctx, cl.B().Set().Key(redisTicketPrefix+key).Value(rueidis.BinaryString(value)).Nx().
		PxMilliseconds(ttl.Milliseconds()).Build()).Error()
	switch {
	case rueidis.IsRedisNil(err):
		return fmt.Errorf("%w: ticket collision", ErrTicketStore)
	case err != nil:
		return fmt.Errorf("%w: %v", ErrTicketStore, err)
	}
	return nil
}

// Take returns and deletes the value under key.
func (s *RedisTickets) Take(ctx context.Context, key string) ([]byte, error) {
	cl, err := s.connect()
	if err != nil {
		return nil, err
	}
	v, err := cl.Do(ctx, cl.B().Getdel().Key(redisTicketPrefix+key).Build()).AsBytes()
	switch {
	case rueidis.IsRedisNil(err):
		return nil, ErrTicket
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrTicketStore, err)
	}
	return v, nil
}

// plainName reports whether s is a query parameter name that needs no
// escaping: letters, digits, '-', '_' and '.'.
func plainName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != "" && len(s) <= 64
}

// QueryParam is the query parameter the handshake reads a token from.
func (v *Verifier) QueryParam() string { return v.cfg.QueryParam }
