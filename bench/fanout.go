package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/rueidis"
)

const fanPayload = 100 // bytes per published message

// startRedis starts a private redis-server on a free loopback port.
func (e *env) startRedis() (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc(e.dir, "redis", "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", e.dir, "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitTCP(p, addr, 10*time.Second); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addr, nil
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(string(out))
}

// fanWindow tracks messages in flight: a message's slot is released when
// every subscriber has received it, and the publisher may have at most
// window messages unreleased. That keeps every queue bounded (no slow
// consumer drops) and makes the rate the sustained rate.
type fanWindow struct {
	subs      int32
	sem       chan struct{}
	counts    [1 << 16]atomic.Int32
	measuring atomic.Bool
	delivered atomic.Int64
	mu        sync.Mutex
	lats      []float64 // ms, appended per receiver batch
}

func newFanWindow(subs, window int) *fanWindow {
	w := &fanWindow{subs: int32(subs), sem: make(chan struct{}, window)}
	for range window {
		w.sem <- struct{}{}
	}
	return w
}

// receiver returns the function one subscriber calls per message; lats are
// kept per receiver and merged at flush.
func (w *fanWindow) receiver() (recv func([]byte), flush func()) {
	var local []float64
	recv = func(p []byte) {
		now := time.Now().UnixNano()
		if len(p) < 36 {
			return
		}
		seq, err1 := strconv.ParseInt(string(p[:16]), 10, 64)
		ts, err2 := strconv.ParseInt(string(p[17:36]), 10, 64)
		if err1 != nil || err2 != nil {
			return
		}
		if w.measuring.Load() {
			w.delivered.Add(1)
			local = append(local, float64(now-ts)/1e6)
		}
		slot := &w.counts[seq%int64(len(w.counts))]
		if slot.Add(1) == w.subs {
			slot.Store(0)
			w.sem <- struct{}{}
		}
	}
	flush = func() {
		w.mu.Lock()
		w.lats = append(w.lats, local...)
		w.mu.Unlock()
		local = nil
	}
	return recv, flush
}

func fanMessage(seq int64) string {
	s := fmt.Sprintf("%016d %019d ", seq, time.Now().UnixNano())
	return s + strings.Repeat("x", fanPayload-len(s))
}

// publishFunc publishes one message to the fan-out's channel.
type publishFunc func(ctx context.Context, msg string) error

// publishWindow publishes while the window allows, measuring for dur after
// warm, then waits for the window to drain.
func publishWindow(ctx context.Context, publish publishFunc, w *fanWindow, warm, dur time.Duration) (delivered int64, elapsed time.Duration, err error) {
	var seq atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				select {
				case <-w.sem:
				case <-time.After(5 * time.Second):
					errc <- fmt.Errorf("fan-out stalled: no message fully delivered for 5s")
					return
				}
				if stop.Load() {
					w.sem <- struct{}{}
					return
				}
				if err := publish(ctx, fanMessage(seq.Add(1))); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	time.Sleep(warm)
	w.measuring.Store(true)
	t0 := time.Now()
	time.Sleep(dur)
	w.measuring.Store(false)
	elapsed = time.Since(t0)
	delivered = w.delivered.Load()
	stop.Store(true)
	wg.Wait()
	select {
	case err = <-errc:
		return 0, 0, err
	default:
	}
	// Drain: every slot back means every message was delivered everywhere.
	for i := 0; i < cap(w.sem); i++ {
		select {
		case <-w.sem:
		case <-time.After(5 * time.Second):
			return 0, 0, fmt.Errorf("fan-out did not drain: %d of %d messages undelivered", cap(w.sem)-i, cap(w.sem))
		}
	}
	return delivered, elapsed, nil
}

// publishHTTP is a keep-alive client for the two HTTP publish APIs.
var publishHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
	Proxy:               nil,
	MaxIdleConnsPerHost: 16,
	DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
}}

// postPublish sends one publish request and checks the answer: want is
// the expected status, and a body containing `"error"` is a failure
// (Centrifugo reports errors with 200).
func postPublish(ctx context.Context, url string, hdr map[string]string, body string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := publishHTTP.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want || strings.Contains(string(b), `"error"`) {
		return fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// fanout compares rueidis publish→receive alone with publish→Redis→wsgate
// →WebSocket client for 1 subscriber, and, for fanClients subscribers,
// wsgate (Redis PUBLISH and its POST /publish) with Centrifugo (its HTTP
// API), both on the same redis-server. One client program reads both: the
// subscriber side differs only in the handshake (Centrifugo's connect and
// subscribe commands) and in unwrapping Centrifugo's push envelope.
func (r *runner) fanout(gw, cf *target, redisAddr string) error {
	ctx := context.Background()
	opt := rueidis.ClientOption{InitAddress: []string{redisAddr}, DisableCache: true}
	pub, err := rueidis.NewClient(opt)
	if err != nil {
		return err
	}
	defer pub.Close()
	sub, err := rueidis.NewClient(opt)
	if err != nil {
		return err
	}
	defer sub.Close()

	tok := r.e.tokens["HS256"]
	n := r.p.fanClients
	one := fmt.Sprintf("fan-out 1→1, %d B", fanPayload)
	many := fmt.Sprintf("fan-out 1→%d, %d B", n, fanPayload)
	rate1 := newMetric(one, "deliveries/s", "1/s", false)
	p50_1 := newMetric(one, "p50 publish→receive", "ms", true)
	p99_1 := newMetric(one, "p99 publish→receive", "ms", true)
	rateN := newMetric(many, "deliveries/s", "1/s", false)
	p50N := newMetric(many, "p50 publish→receive", "ms", true)
	p99N := newMetric(many, "p99 publish→receive", "ms", true)
	cpuN := newMetric(many, "server CPU", "% of a core", true)

	type fanCase struct {
		name    string
		metrics [3]*Metric
		subs    int
		window  int
		server  *target // whose CPU is measured; nil: none
		publish publishFunc
		attach  func(w *fanWindow) (detach func(), err error)
	}
	redisPublish := func(channel string) publishFunc {
		return func(ctx context.Context, msg string) error {
			return pub.Do(ctx, pub.B().Publish().Channel(channel).Message(msg).Build()).Error()
		}
	}
	rueidisAttach := func(w *fanWindow) (func(), error) {
		dc, release := sub.Dedicate()
		recv, flush := w.receiver()
		wait := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(m rueidis.PubSubMessage) { recv([]byte(m.Message)) }})
		if err := dc.Do(ctx, dc.B().Subscribe().Channel("bench:base").Build()).Error(); err != nil {
			release()
			return nil, err
		}
		return func() {
			dc.Do(ctx, dc.B().Unsubscribe().Channel("bench:base").Build())
			release()
			select {
			case <-wait:
			case <-time.After(time.Second):
			}
			flush()
		}, nil
	}
	attach := func(open func() ([]*websocket.Conn, error), centrifugo bool) func(w *fanWindow) (func(), error) {
		return func(w *fanWindow) (func(), error) {
			conns, err := open()
			if err != nil {
				return nil, err
			}
			wait := readAll(ctx, conns, w, centrifugo)
			return func() { closeAll(conns); wait() }, nil
		}
	}
	wsAttach := func(ch string, subs int) func(w *fanWindow) (func(), error) {
		return attach(func() ([]*websocket.Conn, error) { return openStreamConns(ctx, gw, ch, tok, subs) }, false)
	}
	cases := []fanCase{
		{"rueidis", [3]*Metric{rate1, p50_1, p99_1}, 1, 64, nil, redisPublish("bench:base"), rueidisAttach},
		{"wsgate", [3]*Metric{rate1, p50_1, p99_1}, 1, 64, gw, redisPublish("bench:one"), wsAttach("one", 1)},
		{"wsgate", [3]*Metric{rateN, p50N, p99N}, n, 4, gw, redisPublish("bench:many"), wsAttach("many", n)},
		{"wsgate POST /publish", [3]*Metric{rateN, p50N, p99N}, n, 4, gw, func(ctx context.Context, msg string) error {
			return postPublish(ctx, gw.admin+"/publish?channel=bench:posted", nil, msg, http.StatusNoContent)
		}, wsAttach("posted", n)},
	}
	if cf != nil {
		cases = append(cases, fanCase{"centrifugo", [3]*Metric{rateN, p50N, p99N}, n, 4, cf, func(ctx context.Context, msg string) error {
			body, _ := json.Marshal(map[string]string{"channel": "bench", "data": msg})
			return postPublish(ctx, cf.admin+"/api/publish", map[string]string{"X-API-Key": centrifugoAPIKey}, string(body), http.StatusOK)
		}, attach(func() ([]*websocket.Conn, error) { return openCentrifugoConns(ctx, cf, "bench", tok, n) }, true)})
	}
	for round := range r.p.rounds {
		line := ""
		for _, c := range rotate(cases, round) {
			w := newFanWindow(c.subs, c.window)
			detach, err := c.attach(w)
			if err != nil {
				return fmt.Errorf("fan-out %s: %w", c.name, err)
			}
			var pids []int
			if c.server != nil {
				pids = c.server.pids()
			}
			cpu0 := cpuSeconds(pids)
			delivered, elapsed, err := publishWindow(ctx, c.publish, w, 300*time.Millisecond, r.p.fanDur)
			cpu := cpuSeconds(pids) - cpu0
			detach()
			if err != nil {
				return fmt.Errorf("fan-out %s to %d: %w", c.name, c.subs, err)
			}
			s := sortedCopy(w.lats)
			rate := float64(delivered) / elapsed.Seconds()
			c.metrics[0].add(c.name, rate)
			c.metrics[1].add(c.name, pct(s, 50))
			c.metrics[2].add(c.name, pct(s, 99))
			if c.subs > 1 {
				cpuN.add(c.name, 100*cpu/elapsed.Seconds()) // includes warm-up and drain; an upper bound
			}
			line += fmt.Sprintf("%s 1→%d %.0f/s p50 %.2fms p99 %.2fms  ", c.name, c.subs, rate, pct(s, 50), pct(s, 99))
		}
		r.log("  fan-out round %d: %s", round+1, line)
	}
	r.add(rate1, p50_1, p99_1, rateN, p50N, p99N, cpuN)
	return nil
}

// openStreamConns connects n clients to wsgate's /ws/stream/{ch} route; each
// is subscribed when its handshake returns.
func openStreamConns(ctx context.Context, gw *target, ch, tok string, n int) ([]*websocket.Conn, error) {
	return dialAll(n, 16, func(int) (*websocket.Conn, error) {
		return dialWS(ctx, gw.base+"/ws/stream/"+ch+"?token="+tok)
	})
}

// openCentrifugoConns connects n clients to Centrifugo over its JSON
// protocol: `connect` with the HS256 token, then `subscribe` to channel;
// each is subscribed when it returns.
func openCentrifugoConns(ctx context.Context, cf *target, channel, tok string, n int) ([]*websocket.Conn, error) {
	connect, _ := json.Marshal(map[string]any{"id": 1, "connect": map[string]string{"token": tok}})
	subscribe, _ := json.Marshal(map[string]any{"id": 2, "subscribe": map[string]string{"channel": channel}})
	command := func(c *websocket.Conn, cmd []byte, id int) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.Write(cctx, websocket.MessageText, cmd); err != nil {
			return err
		}
		_, b, err := c.Read(cctx)
		if err != nil {
			return err
		}
		var reply struct {
			ID    int             `json:"id"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(b, &reply); err != nil || reply.ID != id || reply.Error != nil {
			return fmt.Errorf("centrifugo answered %.200s to %.200s (%v)", b, cmd, err)
		}
		return nil
	}
	return dialAll(n, 16, func(i int) (*websocket.Conn, error) {
		c, err := dialWS(ctx, cf.base+cf.path)
		if err != nil {
			return nil, fmt.Errorf("centrifugo conn %d: %w", i, err)
		}
		if err := command(c, connect, 1); err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("centrifugo conn %d connect: %w", i, err)
		}
		if err := command(c, subscribe, 2); err != nil {
			c.CloseNow()
			return nil, fmt.Errorf("centrifugo conn %d subscribe: %w", i, err)
		}
		return c, nil
	})
}

// centrifugoData hands recv the data string of every publication in one
// Centrifugo frame (newline-separated replies, a push's data a JSON string
// that starts with the sequence and timestamp), and answers a server ping
// (an empty reply) with a pong.
func centrifugoData(ctx context.Context, c *websocket.Conn, frame []byte, recv func([]byte)) {
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		if string(line) == "{}" {
			c.Write(ctx, websocket.MessageText, []byte("{}"))
			continue
		}
		if i := bytes.Index(line, []byte(`"data":"`)); i >= 0 {
			recv(line[i+len(`"data":"`):])
		}
	}
}
