// Package proxy accepts browser WebSockets, authenticates them with an
// auth.Verifier, and joins each to an upstream WebSocket and/or bridge
// subscriptions, pumping frames both ways.
package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/configerr"
	"github.com/wsgate/wsgate/internal/zero"
)

// Config configures a Handler. Zero values are the documented defaults.
type Config struct {
	// Routes maps public paths to upstreams and channels. At least one.
	Routes []Route
	// AllowedOrigins lists browser origins allowed to connect: exact
	// origins ("https://app.example.com") or one leading wildcard label
	// ("https://*.example.com"). Empty: only same-host origins. Requests
	// without an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string
	// MaxMessageBytes bounds one message in each direction. Defaults to 1 MiB.
	MaxMessageBytes int64
	// HeartbeatInterval is how often both legs are pinged. Defaults to 30s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a pong may take. Defaults to 10s.
	HeartbeatTimeout time.Duration
	// DialTimeout bounds the upstream dial and handshake. Defaults to 10s.
	DialTimeout time.Duration
	// WriteTimeout bounds one message write to either leg. Defaults to 10s.
	WriteTimeout time.Duration
	// ShutdownGrace is the window over which Drain spreads its 1001 closes.
	// Defaults to 25s.
	ShutdownGrace time.Duration
	// SubscriberQueue is each client's bridge queue length (messages); a
	// client that falls this far behind is closed as a slow consumer.
	// Defaults to 256.
	SubscriberQueue int
	// Limits bound connections, handshakes and message rates.
	Limits Limits
	// FirstMessage configures routes with Auth: AuthFirstMessage.
	FirstMessage FirstMessage
	// UpstreamTLS configures wss:// upstream dials (roots, client
	// certificates). Nil: the system roots. Not a config-file key.
	UpstreamTLS *tls.Config
}

// Route is one public path. Path parameters ("{id}") may be used in
// Upstream, Subscribe and Publish; channel templates may also use {user},
// {tenant} and {claims.NAME}.
type Route struct {
	// Path is a path pattern such as /ws/bi/dashboards/{id}.
	Path string
	// Upstream is a ws:// or wss:// URL template. Empty: no upstream.
	Upstream string
	// Subscribe lists channel templates whose messages go to the client.
	Subscribe []string
	// Publish is a channel template client messages are published to.
	Publish string
	// Require maps a path parameter to a claim: the parameter's value must
	// be one of the claim's values (e.g. {session: sid}).
	Require map[string]string
	// History, when set, makes the route's one subscribed channel durable:
	// messages are kept, delivered in a position envelope, and a client
	// reconnecting with ?since=<position> gets what it missed.
	History *History
	// Auth is "" (the token comes with the upgrade, or a ticket does) or
	// AuthFirstMessage (the client sends it as its first message).
	Auth string
}

// History configures a durable subscription. Zero values are defaults.
type History struct {
	// Size is how many messages are kept per channel. Defaults to 1000.
	Size int
	// TTL is how long history outlives the last message. Defaults to 10m.
	TTL time.Duration
	// MaxMessageBytes is the largest message the channel keeps; a bigger
	// one is refused (POST /publish 413; a client on a publish route is
	// closed with 1009). Defaults to 256 KiB.
	MaxMessageBytes int
	// MaxReplayBytes caps what one resume replays; a larger gap is
	// reported as {"recovered":false,"reason":"too_large"}. Defaults to 8 MiB.
	MaxReplayBytes int64
}

// SinceParam is the query parameter a resuming client passes its last
// position in.
const SinceParam = "since"

// Durable lists the bridge's durable channel patterns: each history
// route's channel template with its placeholders as wildcards.
func (c Config) Durable() []bridge.Durable {
	var out []bridge.Durable
	for _, r := range c.Routes {
		if r.History == nil || len(r.Subscribe) != 1 {
			continue
		}
		params, _ := pathParams(r.Path)
		t, err := parseTemplate(r.Subscribe[0], params, true)
		if err != nil {
			continue
		}
		pattern := t.expand(func(string) string { return "*" })
		out = append(out, bridge.Durable{Pattern: pattern, Size: r.History.Size, TTL: r.History.TTL,
			MaxMessageBytes: r.History.MaxMessageBytes, MaxReplayBytes: r.History.MaxReplayBytes})
	}
	return out
}

// Defaults for Config's zero values.
const (
	DefaultMaxMessageBytes   = 1 << 20
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultHeartbeatTimeout  = 10 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultShutdownGrace     = 25 * time.Second
	DefaultSubscriberQueue   = 256
)

func (c Config) withDefaults() Config {
	zero.Default(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	zero.Default(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	zero.Default(&c.DialTimeout, DefaultDialTimeout)
	zero.Default(&c.WriteTimeout, DefaultWriteTimeout)
	zero.Default(&c.ShutdownGrace, DefaultShutdownGrace)
	zero.Default(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	zero.Default(&c.SubscriberQueue, DefaultSubscriberQueue)
	c.Limits = c.Limits.withDefaults()
	c.FirstMessage = c.FirstMessage.withDefaults()
	return c
}

// FieldError names the config key at fault, as the config file spells it.
type FieldError = configerr.FieldError

// Validate reports every problem in c, each as a *FieldError, joined.
func (c Config) Validate() error {
	var problems configerr.List
	bad := problems.Add
	if len(c.Routes) == 0 {
		bad("routes", "at least one route is required")
	}
	for i, o := range c.AllowedOrigins {
		if err := checkOriginPattern(o); err != nil {
			bad(fmt.Sprintf("allowed_origins[%d]", i), "%v", err)
		}
	}
	if c.MaxMessageBytes < 0 {
		bad("max_message_bytes", "must not be negative")
	}
	for key, d := range map[string]time.Duration{
		"heartbeat.interval": c.HeartbeatInterval, "heartbeat.timeout": c.HeartbeatTimeout,
		"dial_timeout": c.DialTimeout, "write_timeout": c.WriteTimeout, "shutdown_grace": c.ShutdownGrace,
	} {
		checkDuration(bad, key, d)
	}
	if c.SubscriberQueue < 0 {
		bad("subscriber_queue", "must not be negative")
	}
	c.Limits.validate(bad)
	c.FirstMessage.validate(bad)
	mux := http.NewServeMux()
	for i, r := range c.Routes {
		for _, fe := range r.validate(mux) {
			bad(fmt.Sprintf("routes[%d].%s", i, fe.Key), "%w", fe.Err)
		}
	}
	return problems.Err()
}

// MinDuration is the shortest timeout or interval a config may set: below
// it a gateway works for no one (a 1ns dial timeout fails every dial).
const MinDuration = 50 * time.Millisecond

// checkDuration refuses negative durations and positive ones under
// MinDuration; zero means the documented default.
func checkDuration(bad func(key, format string, args ...any), key string, d time.Duration) {
	switch {
	case d < 0:
		bad(key, "must not be negative")
	case d > 0 && d < MinDuration:
		bad(key, "%s is too short (at least %s; 0 for the default)", d, MinDuration)
	}
}

// ReservedPaths are served by wsgate itself on the public listener. A route
// that would take one of them is refused; a catch-all route ("/" or a
// subtree) leaves them to wsgate.
var ReservedPaths = []string{VerifyPath, TicketPath}

// Paths wsgate serves on the public listener: the ForwardAuth endpoint
// (VerifyHandler) and the ticket endpoint (TicketHandler).
const (
	VerifyPath = "/auth/verify"
	TicketPath = "/auth/ticket"
)

func (r Route) validate(mux *http.ServeMux) []*FieldError {
	var errs []*FieldError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	params, err := pathParams(r.Path)
	if err != nil {
		bad("path", "%v", err)
	} else if err := registerPattern(mux, r.Path); err != nil {
		bad("path", "%v", err)
	} else if p := reservedCollision(r.Path); p != "" {
		bad("path", "takes %s, which wsgate serves itself", p)
	}
	if r.Upstream == "" && len(r.Subscribe) == 0 && r.Publish == "" {
		bad("upstream", "a route needs at least one of upstream, subscribe, publish")
	}
	if r.Upstream != "" {
		if err := checkUpstream(r.Upstream, params); err != nil {
			bad("upstream", "%v", err)
		}
	}
	for j, s := range r.Subscribe {
		if _, err := parseTemplate(s, params, true); err != nil {
			bad(fmt.Sprintf("subscribe[%d]", j), "%v", err)
		}
	}
	if r.Publish != "" {
		if _, err := parseTemplate(r.Publish, params, true); err != nil {
			bad("publish", "%v", err)
		}
	}
	if h := r.History; h != nil {
		if len(r.Subscribe) != 1 {
			bad("history", "needs exactly one subscribe channel (a position belongs to one channel)")
		}
		if h.Size < 0 || h.Size > 1000000 {
			bad("history.size", "must be between 1 and 1000000")
		}
		if h.TTL < 0 {
			bad("history.ttl", "must not be negative")
		} else if h.TTL > 0 && h.TTL < time.Second {
			bad("history.ttl", "%s is too short (at least 1s)", h.TTL)
		}
		if h.MaxMessageBytes < 0 {
			bad("history.max_message_bytes", "must not be negative")
		}
		if h.MaxReplayBytes < 0 {
			bad("history.max_replay_bytes", "must not be negative")
		}
	}
	if !validAuthMode(r.Auth) {
		bad("auth", "must be empty or %q", AuthFirstMessage)
	}
	for p, claim := range r.Require {
		if !contains(params, p) {
			bad("require."+p, "path has no parameter {%s}", p)
		}
		if claim == "" {
			bad("require."+p, "names no claim")
		}
	}
	return errs
}

// registerPattern checks a route path with net/http's own pattern parser.
// A conflict is an error that names the other route but no source file
// (net/http's message says where a pattern was registered).
func registerPattern(mux *http.ServeMux, path string) error {
	return register(mux, path, http.NotFoundHandler())
}

// register is mux.Handle with net/http's panic on a conflict turned into an
// error.
func register(mux *http.ServeMux, path string, handler http.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := registeredAt.ReplaceAllString(fmt.Sprint(r), "")
			err = errors.New(strings.ReplaceAll(msg, "\n", " "))
		}
	}()
	mux.Handle(path, handler)
	return nil
}

// registeredAt matches the source locations in net/http's conflict panics.
var registeredAt = regexp.MustCompile(` ?\(registered at [^)]*\)`)

// reservedCollision names the reserved path a route pattern would take from
// wsgate, or "". Catch-alls ("/", "/x/", "/{p...}") do not count: net/http
// gives the reserved path's own, more specific pattern precedence.
func reservedCollision(path string) string {
	if strings.HasSuffix(path, "/") || strings.HasSuffix(path, "...}") {
		return ""
	}
	mux := http.NewServeMux()
	mux.Handle(path, http.NotFoundHandler())
	for _, p := range ReservedPaths {
		if _, pat := mux.Handler(&http.Request{Method: http.MethodGet, Host: "x", URL: &url.URL{Path: p}}); pat == path {
			return p
		}
	}
	return ""
}

// checkUpstream checks an upstream URL template: ws:// or wss://, a host and
// a valid port, no userinfo, query or fragment, and placeholders only in the
// path, so a client can never choose where wsgate dials.
func checkUpstream(s string, params []string) error {
	t, err := parseTemplate(s, params, false)
	if err != nil {
		return err
	}
	// The authority ends at the first '/' after "://": every placeholder
	// must come after it.
	if first := strings.IndexByte(s, '{'); first >= 0 {
		scheme := strings.Index(s, "://")
		authority := -1
		if scheme >= 0 {
			authority = strings.IndexByte(s[scheme+3:], '/')
		}
		if scheme < 0 || first < scheme+3 || authority < 0 || first < scheme+3+authority {
			return errors.New("placeholders may only be used in the path, never in the scheme, host or port")
		}
	}
	u, err := url.Parse(t.expand(func(string) string { return "x" }))
	switch {
	case err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.Opaque != "":
		return errors.New("must be a ws:// or wss:// URL")
	case u.User != nil:
		return errors.New("must not carry userinfo (wsgate sends the client's token as Authorization; credentials in the URL would be dropped)")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return errors.New("must not carry a query or fragment (the client's query is forwarded)")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is not between 1 and 65535", p)
		}
	}
	return nil
}

// pathParams lists the {name} segments of a route path. The last segment
// may be a tail parameter {name...}, listed as name: it takes the rest of
// the path.
func pathParams(path string) ([]string, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, errors.New("must start with /")
	}
	if strings.ContainsAny(path, " \t?#%") {
		return nil, errors.New("must be a plain path (no spaces, escapes, query or fragment)")
	}
	if clean := cleanPath(path); clean != path {
		return nil, fmt.Errorf("must be a clean path (%s)", clean)
	}
	var params []string
	segs := strings.Split(path[1:], "/")
	for i, seg := range segs {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := seg[1 : len(seg)-1]
			if tail, ok := strings.CutSuffix(name, "..."); ok {
				if i != len(segs)-1 {
					return nil, fmt.Errorf("tail parameter %q must be the last segment", seg)
				}
				name = tail
			}
			if !validName(name) {
				return nil, fmt.Errorf("bad parameter %q", seg)
			}
			if contains(params, name) || reservedName(name) {
				return nil, fmt.Errorf("parameter {%s} is repeated or reserved", name)
			}
			params = append(params, name)
		} else if strings.ContainsAny(seg, "{}") {
			return nil, fmt.Errorf("segment %q: a parameter must be a whole segment", seg)
		}
	}
	return params, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}
