// Package bridge fans Pub/Sub channel messages out to subscribers and
// publishes their messages, over Redis or an in-process broker. It knows
// nothing of WebSockets or tokens: a Subscription is a bounded queue, and a
// subscriber that lets it overflow is dropped, never waited for.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wsgate/wsgate/internal/zero"
)

// Config configures a Hub. Zero values are the documented defaults.
type Config struct {
	// URL is a Redis URL: redis://[user:pass@]host:port/db, rediss:// for
	// TLS, ?addr=host2:port&addr=... for Cluster seeds, or a Sentinel
	// address with ?master_set=NAME. Empty: an in-process broker, which only
	// reaches subscribers of the same process.
	URL string
	// ReconnectMin and ReconnectMax bound the reconnect backoff. Default
	// 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// CommandTimeout bounds one SUBSCRIBE, UNSUBSCRIBE or PUBLISH. Defaults to 5s.
	CommandTimeout time.Duration
	// Durable lists the channels whose messages are kept for resume.
	Durable []Durable
}

// Errors a Subscription ends with, and Hub errors callers branch on.
var (
	// ErrSlowConsumer: the subscriber's queue overflowed; it was dropped.
	ErrSlowConsumer = errors.New("bridge: slow consumer")
	// ErrGap: the broker connection dropped and came back; messages
	// published in between were not delivered.
	ErrGap = errors.New("bridge: subscription interrupted")
	// ErrClosed: the subscription was closed by its owner or the Hub stopped.
	ErrClosed = errors.New("bridge: subscription closed")
	// ErrUnavailable: the broker is not connected.
	ErrUnavailable = errors.New("bridge: broker unavailable")
	// ErrTooLarge: a message over its durable channel's MaxMessageBytes.
	ErrTooLarge = errors.New("bridge: message too large for history")
)

// Message is one channel message. It is shared by every subscriber of the
// channel and must not be modified.
type Message struct {
	Channel string
	Payload []byte
	// Binary is true when Payload is not valid UTF-8, so it must travel as
	// a binary WebSocket message. Computed once per message, not per subscriber.
	Binary bool
	// Pos is the message's position in a durable channel's history; zero
	// for other channels, and for a durable channel's message that was
	// published around wsgate's publish path (a raw PUBLISH).
	Pos Position
	// Envelope is what a durable route sends the client (see envelope);
	// nil on other channels.
	Envelope []byte
}

// Hub owns one broker connection shared by all subscribers of the process,
// with reference-counted channel subscriptions: N subscribers of a channel
// cost one SUBSCRIBE, and the last one leaving sends UNSUBSCRIBE. Run owns the
// broker connection; Subscribe, Publish and Subscription.Close are safe for
// concurrent use.
type Hub struct {
	// Static after construction.
	cfg     Config
	broker  broker
	log     *zap.Logger
	metrics *metrics

	mu       sync.RWMutex
	channels map[string]map[*Subscription]struct{} // guarded by mu
}

// broker is a Pub/Sub transport.
type broker interface {
	// run keeps the transport connected until ctx ends.
	run(ctx context.Context) error
	// ready reports whether the transport is connected.
	ready() bool
	// sync makes the transport's subscription to channel match whether the
	// hub has subscribers for it.
	sync(ctx context.Context, channel string) error
	// enqueue schedules sync for channel without blocking.
	enqueue(channel string)
	publish(ctx context.Context, channel string, payload []byte) error
	// publishDurable records payload in channel's history and publishes it
	// marked with its position, atomically.
	publishDurable(ctx context.Context, channel string, payload []byte, d Durable) error
	// historyInfo returns channel's epoch, the highest trimmed ID, and the
	// count, total payload bytes and last ID of the entries after since.
	historyInfo(ctx context.Context, channel string, since streamID) (historyInfo, error)
	// historyPage returns the entries after `after`, up to and including
	// until, at most maxCount of them and stopping once maxBytes of
	// payload are reached (at least one entry when any is left).
	historyPage(ctx context.Context, channel string, after, until streamID, maxCount, maxBytes int) ([]historyEntry, error)
}

// New builds a Hub. Nothing is dialled until Run. log and reg may be nil.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Hub, error) {
	if log == nil {
		log = zap.NewNop()
	}
	zero.Default(&cfg.ReconnectMin, 100*time.Millisecond)
	zero.Default(&cfg.ReconnectMax, 5*time.Second)
	zero.Default(&cfg.CommandTimeout, 5*time.Second)
	h := &Hub{
		cfg:      cfg,
		log:      log,
		metrics:  newMetrics(reg),
		channels: make(map[string]map[*Subscription]struct{}),
	}
	if cfg.URL == "" {
		h.broker = &memoryBroker{hub: h}
		return h, nil
	}
	b, err := newRedisBroker(cfg, h)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	h.broker = b
	return h, nil
}

// Run keeps the broker connected until ctx ends, then ends every
// subscription with ErrClosed.
func (h *Hub) Run(ctx context.Context) error {
	err := h.broker.run(ctx)
	h.mu.Lock()
	for _, subs := range h.channels {
		for s := range subs {
			h.endLocked(s, ErrClosed)
		}
	}
	h.mu.Unlock()
	return err
}

// Ready reports whether the broker is connected.
func (h *Hub) Ready() bool { return h.broker.ready() }

// Subscribe returns a subscription to channels with a queue of queueLen
// messages. It returns once the broker confirmed every subscription, so no
// message published after Subscribe returns is missed.
func (h *Hub) Subscribe(ctx context.Context, channels []string, queueLen int) (*Subscription, error) {
	if !h.broker.ready() {
		return nil, ErrUnavailable
	}
	s := &Subscription{hub: h, channels: channels, c: make(chan *Message, queueLen)}
	h.metrics.subscribers.Inc() // endLocked decrements, whichever way s ends
	h.mu.Lock()
	for _, ch := range channels {
		subs := h.channels[ch]
		if subs == nil {
			subs = make(map[*Subscription]struct{})
			h.channels[ch] = subs
		}
		subs[s] = struct{}{}
	}
	h.mu.Unlock()
	for _, ch := range channels {
		if err := h.broker.sync(ctx, ch); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	return s, nil
}

// Publish sends payload to channel through the broker.
func (h *Hub) Publish(ctx context.Context, channel string, payload []byte) error {
	if !h.broker.ready() {
		h.metrics.publishes.WithLabelValues("unavailable").Inc()
		return ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.CommandTimeout)
	defer cancel()
	publish := h.broker.publish
	if d, ok := h.durableFor(channel); ok {
		d = d.withDefaults()
		if len(payload) > d.MaxMessageBytes {
			h.metrics.publishes.WithLabelValues("too_large").Inc()
			return fmt.Errorf("%w: %d bytes; a durable channel keeps at most %d", ErrTooLarge, len(payload), d.MaxMessageBytes)
		}
		publish = func(ctx context.Context, channel string, payload []byte) error {
			return h.broker.publishDurable(ctx, channel, payload, d)
		}
	}
	if err := publish(ctx, channel, payload); err != nil {
		h.metrics.publishes.WithLabelValues("error").Inc()
		h.log.Warn("publish_failed", zap.String("channel", channel), zap.Int("bytes", len(payload)), zap.Error(err))
		return fmt.Errorf("%w: publish: %v", ErrUnavailable, err)
	}
	h.metrics.publishes.WithLabelValues("ok").Inc()
	return nil
}

// dispatch hands one broker message to every subscriber of its channel. It
// never blocks: a subscriber whose queue is full is ended as a slow consumer.
// Called from the broker's single read loop, so per-channel order holds.
func (h *Hub) dispatch(channel string, payload []byte) {
	h.metrics.received.Inc()
	h.mu.RLock()
	n := len(h.channels[channel])
	h.mu.RUnlock()
	if n == 0 {
		return // nobody here: build no message (a subscriber added now missed nothing it was owed)
	}
	var m *Message
	if len(h.cfg.Durable) == 0 {
		m = &Message{Channel: channel, Payload: payload, Binary: !utf8.Valid(payload)}
	} else {
		pos, rest, marked := unmark(payload)
		_, durable := h.durableFor(channel)
		if durable && !marked {
			h.metrics.dropped.WithLabelValues("unrecorded").Inc() // delivered, but not resumable
		}
		m = newMessage(channel, rest, pos, durable)
	}
	var slow []*Subscription
	delivered := 0
	rp := readyPool.Get().(*[]func(int))
	ready := (*rp)[:0]
	h.mu.RLock()
	for s := range h.channels[channel] {
		select {
		case s.c <- m:
			delivered++
			if s.ready != nil {
				ready = append(ready, s.ready)
			}
		default:
			slow = append(slow, s)
		}
	}
	h.mu.RUnlock()
	h.metrics.delivered.Add(float64(delivered)) // once per message, not per subscriber
	for _, f := range ready {                   // outside the lock: a ready callback may write to a socket
		f(delivered)
	}
	clear(ready)
	*rp = ready
	readyPool.Put(rp)
	if len(slow) == 0 {
		return
	}
	h.metrics.dropped.WithLabelValues("slow_consumer").Add(float64(len(slow)))
	h.mu.Lock()
	for _, s := range slow {
		if h.endLocked(s, ErrSlowConsumer) {
			h.metrics.slowConsumers.Inc()
		}
	}
	h.mu.Unlock()
	h.resync(slow)
}

// gap ends every current subscription with ErrGap: the broker reconnected
// and what was published meanwhile is lost.
func (h *Hub) gap() {
	var ended []*Subscription
	h.mu.Lock()
	for _, subs := range h.channels {
		for s := range subs {
			if h.endLocked(s, ErrGap) {
				ended = append(ended, s)
			}
		}
	}
	h.mu.Unlock()
	h.resync(ended)
}

// activeChannels lists channels with subscribers.
func (h *Hub) activeChannels() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.channels))
	for ch := range h.channels {
		out = append(out, ch)
	}
	return out
}

func (h *Hub) wanted(channel string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels[channel]) > 0
}

// endLocked removes s from every channel and closes its queue with err. It
// reports whether s was still live. h.mu must be held for writing.
func (h *Hub) endLocked(s *Subscription, err error) bool {
	if s.err != nil {
		return false
	}
	s.err = err
	for _, ch := range s.channels {
		if subs := h.channels[ch]; subs != nil {
			delete(subs, s)
			if len(subs) == 0 {
				delete(h.channels, ch)
			}
		}
	}
	close(s.c)
	if s.ready != nil {
		go s.ready(0) // not under h.mu: the callback may read Err
	}
	h.metrics.subscribers.Dec()
	return true
}

// readyPool holds dispatch's lists of ready callbacks to call once the
// lock is released.
var readyPool = sync.Pool{New: func() any { return new([]func(int)) }}

// resync asks the broker, asynchronously, to drop subscriptions that lost
// their last subscriber. Safe to call from the broker's read loop.
func (h *Hub) resync(ended []*Subscription) {
	for _, s := range ended {
		for _, ch := range s.channels {
			h.broker.enqueue(ch)
		}
	}
}

// Subscription is a bounded queue of messages from one or more channels.
// Its owner reads C until it is closed, then reads Err, and calls Close
// when done (Close is idempotent and safe after the Hub ended it).
type Subscription struct {
	hub      *Hub
	channels []string
	c        chan *Message
	err      error            // guarded by hub.mu; set once when c is closed
	ready    func(fanout int) // guarded by hub.mu; see Notify
}

// Notify makes the Hub call ready after each message it queues on C, from
// the dispatching goroutine with no Hub lock held, with fanout the number of
// subscribers the message was queued for; and once after C is closed, on a
// goroutine of its own, with fanout 0. ready must not block: it is how an
// owner that holds no goroutine while the queue is empty learns there is
// something to read. Set it before reading C; messages queued before the
// call are the owner's to find.
func (s *Subscription) Notify(ready func(fanout int)) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.ready = ready
	if s.err != nil {
		go ready(0)
	}
}

// C delivers messages in per-channel publish order. It is closed when the
// subscription ends.
func (s *Subscription) C() <-chan *Message { return s.c }

// Err says why C was closed: ErrSlowConsumer, ErrGap or ErrClosed.
func (s *Subscription) Err() error {
	s.hub.mu.RLock()
	defer s.hub.mu.RUnlock()
	return s.err
}

// Close ends the subscription; the last subscriber of a channel leaving
// unsubscribes the broker.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	live := h.endLocked(s, ErrClosed)
	h.mu.Unlock()
	if live {
		h.resync([]*Subscription{s})
	}
}
