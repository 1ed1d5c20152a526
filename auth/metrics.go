package auth

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	jwksRefreshes *prometheus.CounterVec
	jwksKeys      prometheus.Gauge
	cacheHits     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		jwksRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_jwks_refreshes_total",
			Help: "JWKS fetches by trigger (startup, periodic, unknown_kid) and result (ok, error, rate_limited).",
		}, []string{"trigger", "result"}),
		jwksKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsgate_jwks_keys",
			Help: "Usable signature keys in the last good JWKS.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsgate_token_cache_hits_total",
			Help: "Handshakes whose token was found in the verified-token cache.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.jwksRefreshes, m.jwksKeys, m.cacheHits)
	}
	return m
}
