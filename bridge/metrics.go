package bridge

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	subscribers   prometheus.Gauge
	channels      prometheus.Gauge
	received      prometheus.Counter
	delivered     prometheus.Counter
	dropped       *prometheus.CounterVec
	slowConsumers prometheus.Counter
	publishes     *prometheus.CounterVec
	replays       *prometheus.CounterVec
	replayed      prometheus.Counter
	reconnects    prometheus.Counter
	downSeconds   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		subscribers:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "wsgate_bridge_subscriptions", Help: "Live client subscriptions."}),
		channels:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "wsgate_bridge_redis_channels", Help: "Channels this process is SUBSCRIBEd to on Redis."}),
		received:      prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_bridge_messages_received_total", Help: "Messages received from the broker."}),
		delivered:     prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_bridge_messages_delivered_total", Help: "Messages queued to subscribers (one per subscriber)."}),
		dropped:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgate_bridge_messages_dropped_total", Help: "Messages not delivered, by reason."}, []string{"reason"}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_bridge_slow_consumer_closes_total", Help: "Subscribers dropped because their queue overflowed."}),
		publishes:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgate_bridge_publishes_total", Help: "Publishes by result."}, []string{"result"}),
		replays:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgate_bridge_replays_total", Help: "Resume requests by result (recovered, too_old, epoch_changed, too_large, bad_position)."}, []string{"result"}),
		replayed:      prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_bridge_replayed_messages_total", Help: "Messages replayed to resuming clients."}),
		reconnects:    prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_bridge_redis_reconnects_total", Help: "Redis Pub/Sub reconnections after a loss."}),
		downSeconds:   prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_bridge_redis_disconnected_seconds_total", Help: "Time spent without a Redis Pub/Sub connection after a loss."}),
	}
	if reg != nil {
		reg.MustRegister(m.subscribers, m.channels, m.received, m.delivered, m.dropped, m.slowConsumers, m.publishes, m.replays, m.replayed, m.reconnects, m.downSeconds)
	}
	return m
}
