package bridge

import (
	"context"
	_ "embed"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// redisBroker keeps one dedicated Pub/Sub connection for the whole process
// and a pipelined client for PUBLISH. run owns both and the sync goroutine.
type redisBroker struct {
	// Static after construction.
	hub  *Hub
	cfg  Config
	opt  rueidis.ClientOption
	todo chan string // channels to re-sync; drained by syncLoop

	client    atomic.Pointer[rueidis.Client] // nil until the first connection
	connected atomic.Bool

	mu         sync.Mutex              // serializes (un)subscribe commands
	dc         rueidis.DedicatedClient // guarded by mu; nil while disconnected
	subscribed map[string]bool         // guarded by mu; this connection's SUBSCRIBEs
}

func newRedisBroker(cfg Config, h *Hub) (*redisBroker, error) {
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	opt.DisableCache = true
	opt.Dialer.Timeout = cfg.CommandTimeout
	opt.ConnWriteTimeout = cfg.CommandTimeout
	return &redisBroker{hub: h, cfg: cfg, opt: opt, todo: make(chan string, 4096)}, nil
}

func (b *redisBroker) ready() bool { return b.connected.Load() }

func (b *redisBroker) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go b.syncLoop(ctx, &wg)
	defer wg.Wait()
	defer func() {
		if c := b.client.Load(); c != nil {
			(*c).Close()
		}
	}()

	backoff := b.cfg.ReconnectMin
	connectedBefore := false
	var downSince time.Time
	for ctx.Err() == nil {
		wait, release, err := b.connect(ctx)
		if err != nil {
			if ctx.Err() == nil {
				b.hub.log.Warn("redis_connect_failed", zap.Error(err), zap.Duration("retry_in", backoff))
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, b.cfg.ReconnectMax)
			continue
		}
		backoff = b.cfg.ReconnectMin
		b.connected.Store(true)
		if connectedBefore {
			b.hub.metrics.reconnects.Inc()
			b.hub.metrics.downSeconds.Add(time.Since(downSince).Seconds())
			b.hub.log.Info("redis_reconnected", zap.Duration("down", time.Since(downSince)))
			b.hub.gap()
		}
		connectedBefore = true
		select {
		case err := <-wait:
			downSince = time.Now()
			b.hub.log.Warn("redis_disconnected", zap.Error(err))
		case <-ctx.Done():
		}
		b.connected.Store(false)
		b.mu.Lock()
		b.dc = nil
		b.subscribed = nil
		b.mu.Unlock()
		release()
	}
	return nil
}

// connect dedicates a Pub/Sub connection and subscribes every channel that
// has subscribers. wait yields when that connection is lost.
func (b *redisBroker) connect(ctx context.Context) (<-chan error, func(), error) {
	c := b.client.Load()
	if c == nil {
		nc, err := rueidis.NewClient(b.opt)
		if err != nil {
			return nil, nil, err
		}
		c = &nc
		b.client.Store(c)
	}
	dc, release := (*c).Dedicate()
	wait := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: func(m rueidis.PubSubMessage) { b.hub.dispatch(m.Channel, []byte(m.Message)) },
	})
	cctx, cancel := context.WithTimeout(ctx, b.cfg.CommandTimeout)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subscribed = make(map[string]bool)
	if chans := b.hub.activeChannels(); len(chans) > 0 {
		if err := dc.Do(cctx, dc.B().Subscribe().Channel(chans...).Build()).Error(); err != nil {
			release()
			return nil, nil, err
		}
		for _, ch := range chans {
			b.subscribed[ch] = true
		}
	} else if err := dc.Do(cctx, dc.B().Ping().Build()).Error(); err != nil {
		release()
		return nil, nil, err
	}
	b.dc = dc
	b.hub.metrics.channels.Set(float64(len(b.subscribed)))
	return wait, release, nil
}

// sync makes this connection's subscription to channel match demand.
func (b *redisBroker) sync(ctx context.Context, channel string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.CommandTimeout)
	defer cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dc == nil {
		return ErrUnavailable
	}
	want, have := b.hub.wanted(channel), b.subscribed[channel]
	var err error
	switch {
	case want && !have:
		if err = b.dc.Do(ctx, b.dc.B().Subscribe().Channel(channel).Build()).Error(); err == nil {
			b.subscribed[channel] = true
		}
	case !want && have:
		if err = b.dc.Do(ctx, b.dc.B().Unsubscribe().Channel(channel).Build()).Error(); err == nil {
			delete(b.subscribed, channel)
		}
	}
	b.hub.metrics.channels.Set(float64(len(b.subscribed)))
	return err
}

func (b *redisBroker) enqueue(channel string) {
	select {
	case b.todo <- channel:
	default:
		// Queue full: the stale subscription costs some traffic until the
		// channel is touched again; it is never a correctness problem.
		b.hub.metrics.dropped.WithLabelValues("unsubscribe_queue_full").Inc()
	}
}

// syncLoop applies queued syncs off the read loop's goroutine.
func (b *redisBroker) syncLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-b.todo:
			if err := b.sync(ctx, ch); err != nil && !errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
				b.hub.log.Warn("redis_sync_failed", zap.Error(err))
			}
		}
	}
}

func (b *redisBroker) publish(ctx context.Context, channel string, payload []byte) error {
	return b.retryOnce(ctx, func(cl rueidis.Client) error {
		return cl.Do(ctx, cl.B().Publish().Channel(channel).Message(rueidis.BinaryString(payload)).Build()).Error()
	})
}

// retryOnce runs a write, and runs it again once when it failed on the
// connection rather than in Redis: after a Redis restart the first command
// on each pooled connection meets EOF, and without the retry the message
// would be lost behind an error. A Redis error reply is final.
func (b *redisBroker) retryOnce(ctx context.Context, write func(rueidis.Client) error) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		c := b.client.Load()
		if c == nil {
			return ErrUnavailable
		}
		err = write(*c)
		if _, isRedisErr := rueidis.IsRedisErr(err); err == nil || isRedisErr || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// History lives in a stream, an epoch key and a "last trimmed ID" key per
// durable channel. The {...} hash tag keeps all three in one Cluster slot.
func historyKeys(channel string) []string {
	tag := "{" + channel + "}"
	return []string{"wsgate:history:" + tag, "wsgate:epoch:" + tag, "wsgate:trimmed:" + tag}
}

// publishScript records and publishes atomically, so a message is either in
// the history and on the wire with its position, or neither. It trims by
// size and age itself, remembering the newest trimmed ID: a resume from
// before it has a gap (Redis's own max-deleted-entry-id ignores trimming).
// The Python publisher (clients/python) runs a byte-equal copy.
//
//go:embed publish.lua
var publishLua string

var publishScript = rueidis.NewLuaScript(publishLua)

// historyInfoScript reads the epoch, the newest trimmed ID, and the count,
// payload bytes and last ID of the entries after ARGV[1], in one
// consistent step. It walks the stream in pages of 100 inside Redis, so
// nothing but the totals crosses the wire.
var historyInfoScript = rueidis.NewLuaScript(`
local epoch = redis.call('GET', KEYS[2])
if not epoch then return {'', '0-0', 0, 0, '0-0'} end
local trimmed = redis.call('GET', KEYS[3]) or '0-0'
local count, bytes, last = 0, 0, '0-0'
local cursor = '(' .. ARGV[1]
while true do
  local rows = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', 100)
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    count = count + 1
    bytes = bytes + #row[2][2]
    last = row[1]
  end
  cursor = '(' .. last
end
return {epoch, trimmed, count, bytes, last}
`)

// historyPageScript returns the entries after ARGV[1] up to ARGV[2], at
// most ARGV[3] of them, stopping once ARGV[4] payload bytes are reached.
var historyPageScript = rueidis.NewLuaScript(`
local out, bytes = {}, 0
local cursor = '(' .. ARGV[1]
local maxCount, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[4])
while #out < maxCount and bytes < maxBytes do
  local rows = redis.call('XRANGE', KEYS[1], cursor, ARGV[2], 'COUNT', 16)
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    out[#out + 1] = row
    bytes = bytes + #row[2][2]
    cursor = '(' .. row[1]
    if #out >= maxCount or bytes >= maxBytes then break end
  end
end
return out
`)

func (b *redisBroker) publishDurable(ctx context.Context, channel string, payload []byte, d Durable) error {
	args := []string{channel, rueidis.BinaryString(payload), strconv.Itoa(d.Size),
		strconv.FormatInt(d.TTL.Milliseconds(), 10), newEpoch(), string(durableMarker)}
	return b.retryOnce(ctx, func(cl rueidis.Client) error {
		return publishScript.Exec(ctx, cl, historyKeys(channel), args).Error()
	})
}

// readHistory runs an idempotent history read, retried when the
// connection was lost under it (a restarted Redis shows up as EOF on the
// first command).
func (b *redisBroker) readHistory(ctx context.Context, script *rueidis.Lua, channel string, args []string) ([]rueidis.RedisMessage, error) {
	var reply []rueidis.RedisMessage
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		c := b.client.Load()
		if c == nil {
			return nil, ErrUnavailable
		}
		reply, err = script.Exec(ctx, *c, historyKeys(channel), args).ToArray()
		if _, isRedisErr := rueidis.IsRedisErr(err); err == nil || isRedisErr || ctx.Err() != nil {
			break
		}
	}
	return reply, err
}

func (b *redisBroker) historyInfo(ctx context.Context, channel string, since streamID) (historyInfo, error) {
	reply, err := b.readHistory(ctx, historyInfoScript, channel, []string{since.String()})
	if err != nil {
		return historyInfo{}, err
	}
	if len(reply) != 5 {
		return historyInfo{}, errors.New("history: unexpected reply")
	}
	var info historyInfo
	info.epoch, _ = reply[0].ToString()
	md, _ := reply[1].ToString()
	info.maxDeleted, _ = parseStreamID(md)
	count, _ := reply[2].AsInt64()
	info.count = int(count)
	info.bytes, _ = reply[3].AsInt64()
	last, _ := reply[4].ToString()
	info.last, _ = parseStreamID(last)
	return info, nil
}

func (b *redisBroker) historyPage(ctx context.Context, channel string, after, until streamID, maxCount, maxBytes int) ([]historyEntry, error) {
	rows, err := b.readHistory(ctx, historyPageScript, channel,
		[]string{after.String(), until.String(), strconv.Itoa(maxCount), strconv.Itoa(maxBytes)})
	if err != nil {
		return nil, err
	}
	entries := make([]historyEntry, 0, len(rows))
	for _, row := range rows {
		parts, err := row.ToArray()
		if err != nil || len(parts) != 2 {
			continue
		}
		ids, _ := parts[0].ToString()
		id, ok := parseStreamID(ids)
		fields, _ := parts[1].ToArray()
		if !ok || len(fields) != 2 {
			continue
		}
		v, _ := fields[1].ToString()
		entries = append(entries, historyEntry{id: id, payload: []byte(v)})
	}
	return entries, nil
}
