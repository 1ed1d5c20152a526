package proxy

import (
	"strconv"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/internal/closecode"
)

// metrics are labelled by route pattern, never by user, tenant or token.
type metrics struct {
	active           *prometheus.GaugeVec
	handshakes       *prometheus.CounterVec
	handshakeSeconds *prometheus.HistogramVec
	dialSeconds      *prometheus.HistogramVec
	closes           *prometheus.CounterVec
	forwardAuth      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsgate_connections_active", Help: "Open client connections by route.",
		}, []string{"route"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_handshakes_total", Help: "Handshakes by route and result.",
		}, []string{"route", "result"}),
		handshakeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wsgate_handshake_duration_seconds", Help: "Time from request to accepted upgrade, by route.", Buckets: buckets,
		}, []string{"route"}),
		dialSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wsgate_upstream_dial_duration_seconds", Help: "Upstream WebSocket dial and handshake time, by route.", Buckets: buckets,
		}, []string{"route"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_closes_total", Help: "Closed connections by route, close code sent to the client, and the side that caused it.",
		}, []string{"route", "code", "side"}),
		forwardAuth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_forward_auth_total", Help: "GET /auth/verify answers by result (ok, unauthorized, rate_limited, bad_method, unavailable).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.active, m.handshakes, m.handshakeSeconds, m.dialSeconds, m.closes, m.forwardAuth)
	}
	return m
}

// codeLabel bounds the close-code label: a code in the close-code table is
// its number, anything else (a client's or an upstream's own code) is
// "other", so a peer cannot mint series by choosing codes.
func codeLabel(c websocket.StatusCode) string {
	if _, ok := closecode.Lookup(c); ok {
		return strconv.Itoa(int(c))
	}
	return "other"
}

// trafficCollector reports wsgate_messages_total and
// wsgate_message_bytes_total by summing, at scrape time, the counters of
// ended sessions and of live ones. The per-message path then only adds to
// its own session's counters: no cache line shared between connections.
type trafficCollector struct {
	h         *Handler
	msgsDesc  *prometheus.Desc
	bytesDesc *prometheus.Desc
}

// traffic is what ended sessions relayed, per route and direction.
type traffic map[string]*[numDirections][2]int64

func newTrafficCollector(h *Handler) *trafficCollector {
	labels := []string{"route", "direction"}
	return &trafficCollector{
		h:         h,
		msgsDesc:  prometheus.NewDesc("wsgate_messages_total", "Messages relayed by route and direction.", labels, nil),
		bytesDesc: prometheus.NewDesc("wsgate_message_bytes_total", "Payload bytes relayed by route and direction.", labels, nil),
	}
}

func (c *trafficCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.msgsDesc
	ch <- c.bytesDesc
}

func (c *trafficCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	sums := make(map[string]*[numDirections][2]int64, len(h.cfg.Routes))
	for _, r := range h.cfg.Routes {
		sums[r.Path] = new([numDirections][2]int64)
	}
	h.mu.Lock()
	for route, t := range h.ended {
		for d := range t {
			sums[route][d][0] += t[d][0]
			sums[route][d][1] += t[d][1]
		}
	}
	for s := range h.sessions {
		sum := sums[s.rt.cfg.Path]
		for d := direction(0); d < numDirections; d++ {
			sum[d][0] += s.msgs[d].Load()
			sum[d][1] += s.bytes[d].Load()
		}
	}
	h.mu.Unlock()
	for route, sum := range sums {
		for d := direction(0); d < numDirections; d++ {
			ch <- prometheus.MustNewConstMetric(c.msgsDesc, prometheus.CounterValue, float64(sum[d][0]), route, d.String())
			ch <- prometheus.MustNewConstMetric(c.bytesDesc, prometheus.CounterValue, float64(sum[d][1]), route, d.String())
		}
	}
}
