package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// observer holds the metrics that dashboards and alerts need beyond
// metrics.go: session durations, message sizes, how full the connection
// caps are, and drain progress. Labels are route patterns, directions and
// fixed scopes only. The zero value (no registry) records nothing.
type observer struct {
	// Static after register.
	sessionSeconds *prometheus.HistogramVec

	drainStart atomic.Int64 // unix nanoseconds Drain began at; 0 before

	mu    sync.Mutex             // guards ended; taken inside Handler.mu by Collect
	ended map[string]*sizeCounts // route and direction → sizes of ended sessions' messages
}

// sessionDurationBuckets span a connection refused right after its upgrade
// to a day-long stream.
var sessionDurationBuckets = []float64{.1, .5, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600}

// sizeBounds are the message size histogram's upper bounds in bytes:
// powers of four from 64 B to 1 MiB (the default max_message_bytes).
var sizeBounds = [...]int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}

// sizeCounts is a message size histogram: one count per bound, one above
// the last, and the byte sum. In a session it is written by the one
// goroutine relaying its direction and read by scrapes.
type sizeCounts struct {
	n   [len(sizeBounds) + 1]atomic.Int64
	sum atomic.Int64
}

func (c *sizeCounts) observe(size int) {
	i := 0
	for i < len(sizeBounds) && size > sizeBounds[i] {
		i++
	}
	c.n[i].Add(1)
	c.sum.Add(int64(size))
}

func (c *sizeCounts) addTo(dst *sizeCounts) {
	for i := range c.n {
		dst.n[i].Add(c.n[i].Load())
	}
	dst.sum.Add(c.sum.Load())
}

// register creates and registers the observer's metrics on reg.
func (o *observer) register(h *Handler, reg prometheus.Registerer) {
	o.sessionSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "wsgate_session_duration_seconds", Help: "Lifetime of accepted connections, by route, observed at close.",
		Buckets: sessionDurationBuckets,
	}, []string{"route"})
	o.ended = make(map[string]*sizeCounts)
	reg.MustRegister(o.sessionSeconds, &observerCollector{h: h,
		sizes: prometheus.NewDesc("wsgate_message_size_bytes", "Relayed message payload sizes, by route and direction.",
			[]string{"route", "direction"}, nil),
		slots: prometheus.NewDesc("wsgate_connection_slots",
			"Connection slots held in this process: in total (scope=process), and by the busiest user or tenant (scope=user, tenant).",
			[]string{"scope"}, nil),
		slotsLimit: prometheus.NewDesc("wsgate_connection_slots_limit",
			"Configured connection caps by scope (process, user, tenant); absent when a cap is disabled.", []string{"scope"}, nil),
		draining: prometheus.NewDesc("wsgate_draining", "1 once shutdown has begun: new upgrades get 503, open sockets are closed over shutdown_grace.", nil, nil),
		drainElapsed: prometheus.NewDesc("wsgate_drain_elapsed_seconds",
			"Seconds since the drain began; 0 before.", nil, nil),
		grace: prometheus.NewDesc("wsgate_shutdown_grace_seconds", "Configured shutdown_grace: the drain's deadline.", nil, nil),
	})
}

// markDrain records when Drain began.
func (o *observer) markDrain(now time.Time) { o.drainStart.CompareAndSwap(0, now.UnixNano()) }

// recordEnd counts what the ended session s adds to the observer's
// metrics and ends its trace. Its message sizes move from the live sum to
// the ended one under Handler.mu, so a scrape never counts them twice or
// not at all.
func (s *session) recordEnd() {
	h := s.h
	s.trace.end(s)
	o := &h.obs
	if o.sessionSeconds == nil {
		return
	}
	o.sessionSeconds.WithLabelValues(s.rt.cfg.Path).Observe(time.Since(s.start).Seconds())
	h.mu.Lock()
	o.mu.Lock()
	for d := range s.sizes {
		if c := s.sizes[d].Load(); c != nil {
			key := s.rt.cfg.Path + "\x00" + direction(d).String()
			dst := o.ended[key]
			if dst == nil {
				dst = new(sizeCounts)
				o.ended[key] = dst
			}
			c.addTo(dst)
		}
	}
	o.mu.Unlock()
	s.folded = true
	h.mu.Unlock()
}

// observeSize counts one relayed message of n bytes in direction d. Only
// the goroutine relaying d calls it, so the lazy allocation does not race.
func (s *session) observeSize(d direction, n int) {
	c := s.sizes[d].Load()
	if c == nil {
		c = new(sizeCounts)
		s.sizes[d].Store(c)
	}
	c.observe(n)
}

// observerCollector reports the observer's gauges and the message size
// histogram at scrape time.
type observerCollector struct {
	h                                                       *Handler
	sizes, slots, slotsLimit, draining, drainElapsed, grace *prometheus.Desc
}

func (c *observerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sizes, c.slots, c.slotsLimit, c.draining, c.drainElapsed, c.grace} {
		ch <- d
	}
}

func (c *observerCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	o := &h.obs
	sums := make(map[string]*sizeCounts)
	sumOf := func(key string) *sizeCounts {
		if sums[key] == nil {
			sums[key] = new(sizeCounts)
		}
		return sums[key]
	}
	for _, r := range h.cfg.Routes {
		for d := direction(0); d < numDirections; d++ {
			sumOf(r.Path + "\x00" + d.String())
		}
	}
	h.mu.Lock()
	o.mu.Lock()
	for key, e := range o.ended {
		e.addTo(sumOf(key))
	}
	o.mu.Unlock()
	for s := range h.sessions {
		if s.folded {
			continue
		}
		for d := range s.sizes {
			if sc := s.sizes[d].Load(); sc != nil {
				sc.addTo(sumOf(s.rt.cfg.Path + "\x00" + direction(d).String()))
			}
		}
	}
	h.mu.Unlock()
	for key, sc := range sums {
		route, dir := splitKey(key)
		buckets := make(map[float64]uint64, len(sizeBounds))
		var cum uint64
		for i, b := range sizeBounds {
			cum += uint64(sc.n[i].Load())
			buckets[float64(b)] = cum
		}
		cum += uint64(sc.n[len(sizeBounds)].Load())
		ch <- prometheus.MustNewConstHistogram(c.sizes, cum, float64(sc.sum.Load()), buckets, route, dir)
	}

	lim := &h.cfg.Limits
	h.conns.mu.Lock()
	maxUser, maxTenant := 0, 0
	for _, n := range h.conns.perUser {
		maxUser = max(maxUser, n)
	}
	for _, n := range h.conns.perTenant {
		maxTenant = max(maxTenant, n)
	}
	h.conns.mu.Unlock()
	for _, sc := range []struct {
		scope      string
		used, capN int
	}{
		{"process", int(h.conns.total.Load()), lim.MaxConnections},
		{"user", maxUser, lim.MaxConnectionsPerUser},
		{"tenant", maxTenant, lim.MaxConnectionsPerTenant},
	} {
		ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(sc.used), sc.scope)
		if sc.capN > 0 {
			ch <- prometheus.MustNewConstMetric(c.slotsLimit, prometheus.GaugeValue, float64(sc.capN), sc.scope)
		}
	}

	draining, elapsed := 0.0, 0.0
	if h.draining.Load() {
		draining = 1
		if start := o.drainStart.Load(); start != 0 {
			elapsed = time.Since(time.Unix(0, start)).Seconds()
		}
	}
	ch <- prometheus.MustNewConstMetric(c.draining, prometheus.GaugeValue, draining)
	ch <- prometheus.MustNewConstMetric(c.drainElapsed, prometheus.GaugeValue, elapsed)
	ch <- prometheus.MustNewConstMetric(c.grace, prometheus.GaugeValue, h.cfg.ShutdownGrace.Seconds())
}

func splitKey(key string) (route, dir string) {
	for i := 0; i < len(key); i++ {
		if key[i] == 0 {
			return key[:i], key[i+1:]
		}
	}
	return key, ""
}
