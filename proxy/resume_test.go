package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/proxy"
)

func durableGateway(t *testing.T, redisURL string, h proxy.History) *gateway {
	route := proxy.Route{Path: "/ws/ai/durable/{session}", Subscribe: []string{"ai:durable:{session}"},
		Require: map[string]string{"session": "sid"}, History: &h}
	return newBridgeGateway(t, redisURL, func(o *gatewayOpts) {
		o.proxy.Routes = []proxy.Route{route}
		o.bridge.Durable = o.proxy.Durable()
		o.proxy.SubscriberQueue = 2048
	})
}

type resumeFrame struct {
	Type      string          `json:"type"`
	Pos       string          `json:"pos"`
	Data      json.RawMessage `json:"data"`
	Recovered *bool           `json:"recovered"`
	Reason    string          `json:"reason"`
	Replayed  int             `json:"replayed"`
}

func readResumeFrame(t *testing.T, c *websocket.Conn) resumeFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f resumeFrame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return f
}

func tokenMsg(i int) string { return fmt.Sprintf(`{"type":"token","data":{"index":%d}}`, i) }

func TestResumeReplaysExactlyWhatWasMissed(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		g := durableGateway(t, redisURL, proxy.History{Size: 5000, TTL: time.Minute})
		second := g
		if redisURL != "" {
			second = durableGateway(t, redisURL, proxy.History{Size: 5000, TTL: time.Minute}) // another replica
		}
		tok := bearer(wstest.Token(t, "alice", map[string]any{"sid": "s1"}))
		const total, dropAt = 1000, 300

		for _, target := range []struct {
			name string
			g    *gateway
		}{{"same replica", g}, {"other replica", second}} {
			t.Run(target.name, func(t *testing.T) {
				channel := "ai:durable:s1"
				c := g.dial(t, "/ws/ai/durable/s1", tok)
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { // the AI service keeps streaming while the tab drops
					defer wg.Done()
					for i := 0; i < total; i++ {
						if err := g.hub.Publish(context.Background(), channel, []byte(tokenMsg(i))); err != nil {
							t.Errorf("publish %d: %v", i, err)
							return
						}
						if i%50 == 0 {
							time.Sleep(2 * time.Millisecond)
						}
					}
				}()
				var last string
				for i := 0; i < dropAt; i++ {
					f := readResumeFrame(t, c)
					if f.Type != "wsgate.message" || string(f.Data) != tokenMsg(i) || f.Pos == "" {
						t.Fatalf("message %d: %+v (data %s)", i, f, f.Data)
					}
					last = f.Pos
				}
				c.CloseNow() // the tab drops mid-stream

				r := target.g.dial(t, "/ws/ai/durable/s1?since="+url.QueryEscape(last), tok)
				f := readResumeFrame(t, r)
				if f.Type != "wsgate.recovery" || f.Recovered == nil || !*f.Recovered {
					t.Fatalf("first resumeFrame after resume: %+v", f)
				}
				for i := dropAt; i < total; i++ {
					f := readResumeFrame(t, r)
					if string(f.Data) != tokenMsg(i) {
						t.Fatalf("after resume, message %d: got %s (a gap or a duplicate)", i, f.Data)
					}
				}
				wg.Wait()
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				if _, b, err := r.Read(ctx); err == nil {
					t.Errorf("extra message after the stream: %s", b)
				}
				r.Close(websocket.StatusNormalClosure, "")
				if redisURL != "" {
					g.hub.Publish(context.Background(), channel, []byte(`{"type":"reset"}`))
				}
			})
			// Start the next round on a fresh channel epoch position.
			time.Sleep(10 * time.Millisecond)
			tok = bearer(wstest.Token(t, "alice", map[string]any{"sid": "s1"}))
		}
		if got := g.metric(t, "wsgate_bridge_replays_total", "result", "recovered") + second.metric(t, "wsgate_bridge_replays_total", "result", "recovered"); got < 1 {
			t.Errorf("replays counted %v", got)
		}
	})
}

func TestResumeTooOldIsReported(t *testing.T) {
	brokers(t, func(t *testing.T, redisURL string, _ *wstest.Redis) {
		g := durableGateway(t, redisURL, proxy.History{Size: 10, TTL: time.Minute})
		tok := bearer(wstest.Token(t, "alice", map[string]any{"sid": "s1"}))
		c := g.dial(t, "/ws/ai/durable/s1", tok)
		g.hub.Publish(context.Background(), "ai:durable:s1", []byte(tokenMsg(0)))
		first := readResumeFrame(t, c).Pos
		c.CloseNow()
		for i := 1; i < 50; i++ {
			g.hub.Publish(context.Background(), "ai:durable:s1", []byte(tokenMsg(i)))
		}
		r := g.dial(t, "/ws/ai/durable/s1?since="+url.QueryEscape(first), tok)
		f := readResumeFrame(t, r)
		if f.Type != "wsgate.recovery" || f.Recovered == nil || *f.Recovered || f.Reason != "too_old" {
			t.Fatalf("got %+v, want recovered:false reason too_old", f)
		}
		// Live messages still flow after the explicit refusal.
		g.hub.Publish(context.Background(), "ai:durable:s1", []byte(tokenMsg(50)))
		if f := readResumeFrame(t, r); string(f.Data) != tokenMsg(50) {
			t.Errorf("live after too_old: %s", f.Data)
		}
		if got := g.metric(t, "wsgate_bridge_replays_total", "result", "too_old"); got != 1 {
			t.Errorf("too_old replays = %v, want 1", got)
		}
		bad := g.dial(t, "/ws/ai/durable/s1?since=garbage", tok)
		if f := readResumeFrame(t, bad); f.Reason != "bad_position" {
			t.Errorf("garbage position: %+v", f)
		}
	})
}

func TestResumeAfterRedisRestartReportsEpochChange(t *testing.T) {
	r := wstest.StartRedis(t)
	g := durableGateway(t, r.URL(), proxy.History{Size: 100, TTL: time.Minute})
	tok := bearer(wstest.Token(t, "alice", map[string]any{"sid": "s1"}))
	c := g.dial(t, "/ws/ai/durable/s1", tok)
	g.hub.Publish(context.Background(), "ai:durable:s1", []byte(tokenMsg(0)))
	pos := readResumeFrame(t, c).Pos

	r.Kill() // no persistence: the history is gone with it
	r.Start(t)
	wstest.WaitFor(t, "broker back", g.hub.Ready)
	if ce := closeOf(t, c, 10*time.Second); ce.Code != 4009 {
		t.Errorf("client across the restart: %d, want 4009", ce.Code)
	}
	wstest.WaitFor(t, "publish works", func() bool {
		return g.hub.Publish(context.Background(), "ai:durable:s1", []byte(tokenMsg(1))) == nil
	})
	n := g.dial(t, "/ws/ai/durable/s1?since="+url.QueryEscape(pos), tok)
	f := readResumeFrame(t, n)
	if f.Type != "wsgate.recovery" || f.Recovered == nil || *f.Recovered || f.Reason != "epoch_changed" {
		t.Fatalf("got %+v, want recovered:false reason epoch_changed", f)
	}
	if !strings.Contains(pos, ":") {
		t.Errorf("position %q has no epoch", pos)
	}
}

func TestDurableEnvelopeKeepsPayloadBytes(t *testing.T) {
	g := durableGateway(t, "", proxy.History{})
	c := g.dial(t, "/ws/ai/durable/s1", bearer(wstest.Token(t, "alice", map[string]any{"sid": "s1"})))
	for _, tc := range []struct{ payload, want string }{
		{`{"type":"token","data":{"token":"Revenue","index":0}}`, `,"data":{"type":"token","data":{"token":"Revenue","index":0}}}`},
		{`plain words`, `,"text":"plain words"}`},
		{"\xff\x00", `,"binary":"/wA="}`},
	} {
		g.hub.Publish(context.Background(), "ai:durable:s1", []byte(tc.payload))
		got := readText(t, c)
		if !strings.HasPrefix(got, `{"type":"wsgate.message","pos":"`) || !strings.HasSuffix(got, tc.want) {
			t.Errorf("envelope for %q = %s", tc.payload, got)
		}
	}
}
