package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"go.uber.org/zap"
)

// maxJWKSBytes bounds a JWKS response body.
const maxJWKSBytes = 1 << 20

func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return errors.New("must be an http or https URL")
	}
	return nil
}

// jwksSource fetches a remote JWK Set. Fetches are serialized by mu, so a
// burst of unknown kids costs at most one fetch per minRefetch.
type jwksSource struct {
	// Static after construction.
	url        string
	client     *http.Client
	refresh    time.Duration
	minRefetch time.Duration
	log        *zap.Logger
	metrics    *metrics

	mu        sync.Mutex
	lastFetch time.Time // guarded by mu; time of the last attempt of any kind
}

func newJWKSSource(cfg Config, log *zap.Logger, m *metrics) *jwksSource {
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{
			Timeout: cfg.JWKSTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("jwks: redirects are not followed")
			},
		}
	}
	return &jwksSource{
		url:        cfg.JWKSURL,
		client:     client,
		refresh:    cfg.JWKSRefresh,
		minRefetch: cfg.JWKSMinRefetch,
		log:        log,
		metrics:    m,
	}
}

// run fetches until the first success (retrying with backoff), then
// refreshes every s.refresh, publishing each good set. A failed refresh keeps
// the last good set.
func (s *jwksSource) run(ctx context.Context, publish func(keySet)) error {
	backoff := 250 * time.Millisecond
	for !s.fetchAndPublish(ctx, "startup", publish) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.fetchAndPublish(ctx, "periodic", publish)
		}
	}
}

// refetch fetches now unless a fetch happened within minRefetch. It reports
// whether a new set was published.
//
// The fetch is not tied to the handshake that asked for it: a client that
// hangs up must not cancel it, or its forged kid would hold off the real
// key's fetch for minRefetch.
func (s *jwksSource) refetch(ctx context.Context, publish func(keySet)) bool {
	return s.fetchAndPublish(context.WithoutCancel(ctx), "unknown_kid", publish)
}

func (s *jwksSource) fetchAndPublish(ctx context.Context, trigger string, publish func(keySet)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if trigger == "unknown_kid" && time.Since(s.lastFetch) < s.minRefetch {
		s.metrics.jwksRefreshes.WithLabelValues(trigger, "rate_limited").Inc()
		return false
	}
	s.lastFetch = time.Now()
	ks, err := s.fetch(ctx)
	if err != nil {
		s.metrics.jwksRefreshes.WithLabelValues(trigger, "error").Inc()
		s.log.Warn("jwks_fetch_failed", zap.String("trigger", trigger), zap.Error(err))
		return false
	}
	s.metrics.jwksRefreshes.WithLabelValues(trigger, "ok").Inc()
	s.metrics.jwksKeys.Set(float64(len(ks)))
	publish(ks)
	return true
}

func (s *jwksSource) fetch(ctx context.Context) (keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks: read: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, errors.New("jwks: response larger than 1 MiB")
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("jwks: parse: %w", err)
	}
	ks, skipped := jwksKeys(set)
	if len(ks) == 0 {
		return nil, fmt.Errorf("jwks: no usable signature keys (%d skipped)", skipped)
	}
	return ks, nil
}
