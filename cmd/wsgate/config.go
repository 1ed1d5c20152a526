package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.uber.org/zap/zapcore"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/internal/tracing"
	"github.com/wsgate/wsgate/proxy"
)

// fileConfig is the config file's shape; its mapstructure names are the
// contract documented in the README.
type fileConfig struct {
	Listen          string        `mapstructure:"listen"`
	AdminListen     string        `mapstructure:"admin_listen"`
	ShutdownGrace   time.Duration `mapstructure:"shutdown_grace"`
	AllowedOrigins  []string      `mapstructure:"allowed_origins"`
	MaxMessageBytes int64         `mapstructure:"max_message_bytes"`
	Heartbeat       struct {
		Interval time.Duration `mapstructure:"interval"`
		Timeout  time.Duration `mapstructure:"timeout"`
	} `mapstructure:"heartbeat"`
	DialTimeout  time.Duration `mapstructure:"dial_timeout"`
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	UpstreamTLS  struct {
		CAFile     string `mapstructure:"ca_file"`
		CertFile   string `mapstructure:"cert_file"`
		KeyFile    string `mapstructure:"key_file"`
		ServerName string `mapstructure:"server_name"`
	} `mapstructure:"upstream_tls"`
	SubscriberQueue int    `mapstructure:"subscriber_queue"`
	LogLevel        string `mapstructure:"log_level"`
	Auth            struct {
		HMACSecret        string        `mapstructure:"hmac_secret"`
		PublicKeys        []string      `mapstructure:"public_keys"`
		JWKSURL           string        `mapstructure:"jwks_url"`
		JWKSRefresh       time.Duration `mapstructure:"jwks_refresh"`
		JWKSMinRefetch    time.Duration `mapstructure:"jwks_min_refetch"`
		Issuer            string        `mapstructure:"issuer"`
		Audience          []string      `mapstructure:"audience"`
		Leeway            time.Duration `mapstructure:"leeway"`
		QueryParam        string        `mapstructure:"query_param"`
		Cookie            string        `mapstructure:"cookie"`
		UserClaim         string        `mapstructure:"user_claim"`
		TenantClaim       string        `mapstructure:"tenant_claim"`
		SubprotocolPrefix string        `mapstructure:"subprotocol_prefix"`
		CacheSize         int           `mapstructure:"cache_size"`
		// Issue 15: tickets and first-message auth.
		TicketParam         string        `mapstructure:"ticket_param"`
		TicketTTL           time.Duration `mapstructure:"ticket_ttl"`
		FirstMessageTimeout time.Duration `mapstructure:"first_message_timeout"`
	} `mapstructure:"auth"`
	Assertion struct {
		KeyFile string `mapstructure:"key_file"`
		Issuer  string `mapstructure:"issuer"`
	} `mapstructure:"assertion"`
	Limits struct {
		MaxConnections             int           `mapstructure:"max_connections"`
		MaxConnectionsPerUser      int           `mapstructure:"max_connections_per_user"`
		MaxConnectionsPerTenant    int           `mapstructure:"max_connections_per_tenant"`
		HandshakesPerSecondPerIP   float64       `mapstructure:"handshakes_per_second_per_ip"`
		HandshakesPerSecondPerUser float64       `mapstructure:"handshakes_per_second_per_user"`
		MessagesPerSecond          float64       `mapstructure:"messages_per_second"`
		ControlFramesPerSecond     float64       `mapstructure:"control_frames_per_second"`
		MaxConcurrentDials         int           `mapstructure:"max_concurrent_dials"`
		HandshakeTimeout           time.Duration `mapstructure:"handshake_timeout"`
		TrustedProxies             []string      `mapstructure:"trusted_proxies"`
		ReadHeaderTimeout          time.Duration `mapstructure:"read_header_timeout"`
		MaxHeaderBytes             int           `mapstructure:"max_header_bytes"`
		IdleTimeout                time.Duration `mapstructure:"idle_timeout"`
		FailedVerificationsPerIP   float64       `mapstructure:"failed_verifications_per_second_per_ip"`
		PublishBytesPerSecond      float64       `mapstructure:"publish_bytes_per_second"`
		MaxPendingAuth             int           `mapstructure:"max_pending_auth"`
	} `mapstructure:"limits"`
	Admin struct {
		PublishToken string `mapstructure:"publish_token"`
	} `mapstructure:"admin"`
	Redis struct {
		URL string `mapstructure:"url"`
	} `mapstructure:"redis"`
	Routes []struct {
		Path      string            `mapstructure:"path"`
		Upstream  string            `mapstructure:"upstream"`
		Subscribe []string          `mapstructure:"subscribe"`
		Publish   string            `mapstructure:"publish"`
		Require   map[string]string `mapstructure:"require"`
		Auth      string            `mapstructure:"auth"`
		History   *struct {
			Size            int           `mapstructure:"size"`
			TTL             time.Duration `mapstructure:"ttl"`
			MaxMessageBytes int           `mapstructure:"max_message_bytes"`
			MaxReplayBytes  int64         `mapstructure:"max_replay_bytes"`
		} `mapstructure:"history"`
	} `mapstructure:"routes"`
}

// defaults are the documented defaults; every key is listed so that a
// WSGATE_* environment variable can override it.
var defaults = map[string]any{
	"listen":                   ":8080",
	"admin_listen":             ":9090",
	"shutdown_grace":           "25s",
	"allowed_origins":          []string{},
	"max_message_bytes":        proxy.DefaultMaxMessageBytes,
	"heartbeat.interval":       "30s",
	"heartbeat.timeout":        "10s",
	"dial_timeout":             "10s",
	"write_timeout":            "10s",
	"upstream_tls.ca_file":     "",
	"upstream_tls.cert_file":   "",
	"upstream_tls.key_file":    "",
	"upstream_tls.server_name": "",
	"subscriber_queue":         proxy.DefaultSubscriberQueue,
	"log_level":                "info",
	"auth.hmac_secret":         "",
	"auth.public_keys":         []string{},
	"auth.jwks_url":            "",
	"auth.jwks_refresh":        "5m",
	"auth.jwks_min_refetch":    "10s",
	"auth.issuer":              "",
	"auth.audience":            []string{},
	"auth.leeway":              "30s",
	"auth.query_param":         auth.DefaultQueryParam,
	"auth.cookie":              "",
	"auth.user_claim":          auth.DefaultUserClaim,
	"auth.tenant_claim":        auth.DefaultTenantClaim,
	"auth.subprotocol_prefix":  auth.DefaultSubprotocolPrefix,
	"auth.cache_size":          auth.DefaultCacheSize,
	"redis.url":                "",
	// Issue 15: tickets, first-message auth, assertions.
	"auth.ticket_param":          auth.DefaultTicketParam,
	"auth.ticket_ttl":            auth.DefaultTicketTTL.String(),
	"auth.first_message_timeout": proxy.DefaultFirstMessageTimeout.String(),
	"limits.max_pending_auth":    proxy.DefaultMaxPendingAuth,
	"assertion.key_file":         "",
	"assertion.issuer":           auth.DefaultAssertionIssuer,

	"limits.max_connections":                        proxy.DefaultMaxConnections,
	"limits.max_connections_per_user":               proxy.DefaultMaxConnectionsPerUser,
	"limits.max_connections_per_tenant":             proxy.DefaultMaxConnectionsPerTenant,
	"limits.handshakes_per_second_per_ip":           proxy.DefaultHandshakesPerIP,
	"limits.handshakes_per_second_per_user":         proxy.DefaultHandshakesPerUser,
	"limits.messages_per_second":                    proxy.DefaultMessagesPerSecond,
	"limits.control_frames_per_second":              proxy.DefaultControlFramesPerSecond,
	"limits.max_concurrent_dials":                   proxy.DefaultMaxConcurrentDials,
	"limits.handshake_timeout":                      "15s",
	"limits.trusted_proxies":                        proxy.DefaultTrustedProxies,
	"limits.read_header_timeout":                    "5s",
	"limits.max_header_bytes":                       16384,
	"limits.idle_timeout":                           "10s",
	"limits.failed_verifications_per_second_per_ip": proxy.DefaultFailedVerifications,
	"limits.publish_bytes_per_second":               proxy.DefaultPublishBytesPerSecond,
	"admin.publish_token":                           "",

	// Tracing (observe.go, internal/tracing): off unless enabled here or by OTEL_* variables.
	"tracing.enabled":      false,
	"tracing.endpoint":     "",
	"tracing.protocol":     "",
	"tracing.sample_ratio": 0.0,
}

// config is the loaded configuration, split into the packages' Configs.
type config struct {
	Listen, AdminListen string
	ReadHeaderTimeout   time.Duration
	IdleTimeout         time.Duration // plain HTTP keep-alive on the public listener
	MaxHeaderBytes      int
	PublishToken        string // admin POST /publish bearer secret; empty: none
	LogLevel            zapcore.Level
	Auth                auth.Config
	Proxy               proxy.Config
	Bridge              bridge.Config
	Tracing             tracing.Config // observe.go
	Tickets             auth.TicketConfig
	Assertion           assertionConfig
}

// assertionConfig is the assertion section; KeyFile empty: no assertions.
type assertionConfig struct{ KeyFile, Issuer string }

// commonFlags are the flags serve, validate and demo share. Flags override
// environment variables, which override the file.
func commonFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "config file (YAML)")
	fs.String("listen", "", "public listen address (overrides listen)")
	fs.String("admin-listen", "", "admin listen address (overrides admin_listen)")
	fs.String("log-level", "", "debug, info, warn or error (overrides log_level)")
}

// newViper returns a viper with defaults, WSGATE_* environment variables and
// the flags bound.
func newViper(fs *pflag.FlagSet) *viper.Viper {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("WSGATE")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for flag, key := range map[string]string{"listen": "listen", "admin-listen": "admin_listen", "log-level": "log_level"} {
		if f := fs.Lookup(flag); f != nil {
			_ = v.BindPFlag(key, f)
		}
	}
	return v
}

// loadConfig reads the file named by --config (if any), applies the
// environment and flags, and validates everything. The error lists every
// problem, one per line, each naming its key.
func loadConfig(fs *pflag.FlagSet) (*config, error) {
	v := newViper(fs)
	path, _ := fs.GetString("config")
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config: read %s: %w", path, err)
		}
	}
	return decodeConfig(v)
}

func decodeConfig(v *viper.Viper) (*config, error) {
	var errs []error
	if unknown := unknownKeys(v); len(unknown) > 0 {
		for _, k := range unknown {
			errs = append(errs, fmt.Errorf("%s: unknown key", k))
		}
		return nil, joinConfigErrors(errs)
	}
	var fc fileConfig
	if err := v.Unmarshal(&fc); err != nil {
		return nil, joinConfigErrors([]error{decodeError(err)})
	}

	lim := fc.Limits
	cfg := &config{Listen: fc.Listen, AdminListen: fc.AdminListen, ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: lim.MaxHeaderBytes}
	if lim.IdleTimeout < proxy.MinDuration {
		errs = append(errs, fmt.Errorf("limits.idle_timeout: must be at least %s", proxy.MinDuration))
	}
	if tok, err := readSecretFile(fc.Admin.PublishToken); err != nil {
		errs = append(errs, fmt.Errorf("admin.publish_token: cannot read the file it names: %v", err))
	} else if tok != "" && len(tok) < 16 {
		errs = append(errs, fmt.Errorf("admin.publish_token: is %d bytes; at least 16 are required", len(tok)))
	} else {
		cfg.PublishToken = tok
	}
	if lim.ReadHeaderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("limits.read_header_timeout: must be positive"))
	}
	if lim.MaxHeaderBytes < 4096 {
		errs = append(errs, fmt.Errorf("limits.max_header_bytes: must be at least 4096"))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(fc.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", fc.LogLevel))
	}
	pubHost, pubPort, err := listenAddr(fc.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("listen: %v", err))
	}
	adminHost, adminPort, err2 := listenAddr(fc.AdminListen)
	if err2 != nil {
		errs = append(errs, fmt.Errorf("admin_listen: %v", err2))
	}
	if err == nil && err2 == nil && pubPort == adminPort && (pubPort != 0 || fc.Listen == fc.AdminListen) &&
		(pubHost == adminHost || wildcardHost(pubHost) || wildcardHost(adminHost)) {
		errs = append(errs, fmt.Errorf("admin_listen: %s would bind the same port as listen (%s)", fc.AdminListen, fc.Listen))
	}
	if lim.HandshakeTimeout > 0 && lim.HandshakeTimeout < proxy.MinDuration {
		errs = append(errs, fmt.Errorf("limits.handshake_timeout: %s is too short (at least %s)", lim.HandshakeTimeout, proxy.MinDuration))
	}
	if lim.ReadHeaderTimeout > 0 && lim.ReadHeaderTimeout < proxy.MinDuration {
		errs = append(errs, fmt.Errorf("limits.read_header_timeout: %s is too short (at least %s)", lim.ReadHeaderTimeout, proxy.MinDuration))
	}
	a := fc.Auth
	if secret, err := readSecretFile(a.HMACSecret); err != nil {
		errs = append(errs, fmt.Errorf("auth.hmac_secret: cannot read the file it names: %v", err))
	} else {
		a.HMACSecret = secret
	}
	cfg.Auth = auth.Config{
		HMACSecret: []byte(a.HMACSecret), PublicKeyFiles: a.PublicKeys, JWKSURL: a.JWKSURL,
		JWKSRefresh: a.JWKSRefresh, JWKSMinRefetch: a.JWKSMinRefetch,
		Issuer: a.Issuer, Audience: a.Audience, Leeway: a.Leeway,
		QueryParam: a.QueryParam, Cookie: a.Cookie, UserClaim: a.UserClaim, TenantClaim: a.TenantClaim,
		SubprotocolPrefix: a.SubprotocolPrefix, CacheSize: a.CacheSize,
	}
	errs = append(errs, prefixed("auth.", cfg.Auth.Validate())...)
	cfg.Proxy = proxy.Config{
		AllowedOrigins: fc.AllowedOrigins, MaxMessageBytes: fc.MaxMessageBytes,
		HeartbeatInterval: fc.Heartbeat.Interval, HeartbeatTimeout: fc.Heartbeat.Timeout,
		DialTimeout: fc.DialTimeout, WriteTimeout: fc.WriteTimeout, ShutdownGrace: fc.ShutdownGrace,
		SubscriberQueue: fc.SubscriberQueue,
		Limits: proxy.Limits{
			MaxConnections: lim.MaxConnections, MaxConnectionsPerUser: lim.MaxConnectionsPerUser,
			MaxConnectionsPerTenant: lim.MaxConnectionsPerTenant, HandshakesPerSecondPerIP: lim.HandshakesPerSecondPerIP,
			HandshakesPerSecondPerUser: lim.HandshakesPerSecondPerUser, MessagesPerSecond: lim.MessagesPerSecond,
			MaxConcurrentDials: lim.MaxConcurrentDials, HandshakeTimeout: lim.HandshakeTimeout, TrustedProxies: lim.TrustedProxies,
			FailedVerificationsPerSecondPerIP: lim.FailedVerificationsPerIP, PublishBytesPerSecond: lim.PublishBytesPerSecond,
			ControlFramesPerSecond: lim.ControlFramesPerSecond,
		},
	}
	var tlsErrs []error
	cfg.Proxy.UpstreamTLS, tlsErrs = upstreamTLS(fc.UpstreamTLS.CAFile, fc.UpstreamTLS.CertFile, fc.UpstreamTLS.KeyFile, fc.UpstreamTLS.ServerName)
	errs = append(errs, tlsErrs...)
	for _, r := range fc.Routes {
		route := proxy.Route{Path: r.Path, Upstream: r.Upstream, Subscribe: r.Subscribe, Publish: r.Publish, Require: r.Require, Auth: r.Auth}
		if r.History != nil {
			route.History = &proxy.History{Size: r.History.Size, TTL: r.History.TTL,
				MaxMessageBytes: r.History.MaxMessageBytes, MaxReplayBytes: r.History.MaxReplayBytes}
		}
		cfg.Proxy.Routes = append(cfg.Proxy.Routes, route)
	}
	errs = append(errs, ticketsAndAssertion(cfg, a.TicketParam, a.TicketTTL, a.FirstMessageTimeout, lim.MaxPendingAuth, fc.Assertion.KeyFile, fc.Assertion.Issuer)...)
	errs = append(errs, prefixed("", cfg.Proxy.Validate())...)
	errs = append(errs, decodeTracing(v, cfg)...) // observability hook (observe.go)
	cfg.Bridge = bridge.Config{URL: fc.Redis.URL, Durable: cfg.Proxy.Durable()}
	if fc.Redis.URL != "" {
		if _, err := bridge.New(cfg.Bridge, nil, nil); err != nil {
			errs = append(errs, fmt.Errorf("redis.url: not a usable Redis URL"))
		}
	}
	if len(errs) > 0 {
		return nil, joinConfigErrors(errs)
	}
	return cfg, nil
}

// listenAddr checks a listen address: host:port with a port from 0 (any
// free port) to 65535.
func listenAddr(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return host, port, nil
}

// wildcardHost reports whether a listen host binds every interface.
func wildcardHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }

// upstreamTLS builds the TLS settings of wss:// upstream dials: caFile
// replaces the system roots, certFile and keyFile are a client certificate
// (mutual TLS), serverName overrides the name verified. Nil when all are
// empty: the system roots.
func upstreamTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, []error) {
	if caFile == "" && certFile == "" && keyFile == "" && serverName == "" {
		return nil, nil
	}
	var errs []error
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("upstream_tls.ca_file: cannot read %s: %v", caFile, errors.Unwrap(err)))
		default:
			c.RootCAs = x509.NewCertPool()
			if !c.RootCAs.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("upstream_tls.ca_file: no PEM certificate in %s", caFile))
			}
		}
	}
	switch {
	case (certFile == "") != (keyFile == ""):
		errs = append(errs, fmt.Errorf("upstream_tls.cert_file, upstream_tls.key_file: set both or neither"))
	case certFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("upstream_tls.cert_file: not a certificate and key pair with upstream_tls.key_file: %v", err))
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, errs
}

// prefixed flattens a joined validation error into one error per problem,
// each key prefixed with its section.
func prefixed(prefix string, err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		out = append(out, fmt.Errorf("%s%s", prefix, e.Error()))
	}
	return out
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func joinConfigErrors(errs []error) error {
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "config: " + e.Error()
	}
	sort.Strings(lines)
	return errors.New(strings.Join(lines, "\n"))
}

// decodeError rewrites mapstructure's messages ("'heartbeat.interval' time:
// invalid duration ...") so each names its key plainly and never echoes a
// secret value.
func decodeError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "decoding failed due to the following error(s):\n\n")
	var out []string
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.Contains(line, "hmac_secret") {
			line = "auth.hmac_secret: must be a string"
		}
		if strings.Contains(line, "publish_token") {
			line = "admin.publish_token: must be a string"
		}
		out = append(out, line)
	}
	return errors.New(strings.Join(out, "; "))
}

// unknownKeys lists keys in the file or environment that the contract does
// not define, with their full path (routes[1].upstreem).
func unknownKeys(v *viper.Viper) []string {
	var unknown []string
	known := map[string]bool{}
	for k := range defaults {
		known[k] = true
	}
	known["routes"] = true
	routeKeys := map[string]bool{"path": true, "upstream": true, "subscribe": true, "publish": true, "require": true, "history": true, "auth": true}
	for _, k := range v.AllKeys() {
		if known[k] {
			continue
		}
		if strings.HasPrefix(k, "routes") {
			continue // checked below, per route
		}
		unknown = append(unknown, k)
	}
	if routes, ok := v.Get("routes").([]any); ok {
		for i, r := range routes {
			m, ok := r.(map[string]any)
			if !ok {
				unknown = append(unknown, fmt.Sprintf("routes[%d] (must be a mapping)", i))
				continue
			}
			for k, v := range m {
				if !routeKeys[strings.ToLower(k)] {
					unknown = append(unknown, fmt.Sprintf("routes[%d].%s", i, k))
				}
				if h, ok := v.(map[string]any); ok && strings.EqualFold(k, "history") {
					for hk := range h {
						if hk != "size" && hk != "ttl" && hk != "max_message_bytes" && hk != "max_replay_bytes" {
							unknown = append(unknown, fmt.Sprintf("routes[%d].history.%s", i, hk))
						}
					}
				}
			}
		}
	}
	sort.Strings(unknown)
	return unknown
}

// readSecretFile supports auth.hmac_secret and admin.publish_token given as
// "file:/path".
func readSecretFile(s string) (string, error) {
	path, ok := strings.CutPrefix(s, "file:")
	if !ok {
		return s, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
