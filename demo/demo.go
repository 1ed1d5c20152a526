// Package demo is wsgate's embedded default: a demo upstream that streams
// AI-style tokens, a demo "AI service" that publishes the same stream to a
// channel, and the demo page. It is wired by `wsgate demo` only.
package demo

import (
	"context"
	"embed"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/wsgate/wsgate/auth"
)

// Secret is the demo's fixed HMAC secret, so tokens survive a restart. It
// is public: never use it outside `wsgate demo`.
const Secret = "wsgate-demo-secret-never-use-in-production-0123456789"

// TokenDelay is the pause between streamed tokens.
const TokenDelay = 40 * time.Millisecond

//go:embed web
var web embed.FS

// Event is the {"type":..., "data":...} envelope the demo speaks.
type Event struct {
	Type string `json:"type"`
	Data any    `json:"data,omitempty"`
}

// Tokens splits an answer into the token events of a stream, ending with
// the complete event.
func Tokens(answer string) [][]byte {
	words := strings.Fields(answer)
	out := make([][]byte, 0, len(words)+1)
	for i, w := range words {
		b, _ := json.Marshal(Event{Type: "token", Data: map[string]any{"token": w, "index": i}})
		out = append(out, b)
	}
	b, _ := json.Marshal(Event{Type: "complete", Data: map[string]any{"tokens": len(words)}})
	return append(out, b)
}

// Upstream is the demo chat service: it greets with the identity headers it
// received from wsgate and answers each text message with a token stream.
func Upstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "demo upstream: header authentication required", http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"demo.v1"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		hello, _ := json.Marshal(Event{Type: "hello", Data: map[string]string{
			"user": r.Header.Get("X-User-Id"), "tenant": r.Header.Get("X-Tenant-Id"),
		}})
		if c.Write(ctx, websocket.MessageText, hello) != nil {
			return
		}
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ != websocket.MessageText {
				continue
			}
			for _, ev := range Tokens("echo: " + string(msg)) {
				if c.Write(ctx, websocket.MessageText, ev) != nil {
					return
				}
				time.Sleep(TokenDelay)
			}
		}
	})
}

// Publisher publishes to a channel; *bridge.Hub is one.
type Publisher interface {
	Publish(ctx context.Context, channel string, payload []byte) error
}

// Site is the demo page and its endpoints, for the public listener:
// GET / (page), GET /wsgate-client.js, GET /demo/token, POST /demo/ask.
// It owns the streams /demo/ask starts; Close stops them and waits.
type Site struct {
	http.Handler
	pub    Publisher
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Close ends the streams in flight and waits for them.
func (s *Site) Close() {
	s.cancel()
	s.wg.Wait()
}

// NewSite builds the demo site. clientJS is the browser client module.
func NewSite(pub Publisher, clientJS []byte) *Site {
	site := &Site{}
	site.ctx, site.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	site.Handler = mux
	site.pub = pub
	page, _ := fs.Sub(web, "web")
	mux.Handle("GET /{$}", http.FileServerFS(page))
	mux.Handle("GET /demo/web/", http.StripPrefix("/demo/web", http.FileServerFS(page)))
	mux.HandleFunc("GET /wsgate-client.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(clientJS)
	})
	mux.HandleFunc("GET /demo/token", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ttl := 300
		if s := q.Get("ttl"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 86400 {
				http.Error(w, "ttl: seconds between 1 and 86400", http.StatusBadRequest)
				return
			}
			ttl = n
		}
		exp := time.Now().Add(time.Duration(ttl) * time.Second).Unix()
		tok, err := auth.MintHS256([]byte(Secret), map[string]any{
			"sub":       orDefault(q.Get("user"), "alice"),
			"tenant_id": orDefault(q.Get("tenant"), "demo"),
			"sid":       []string{orDefault(q.Get("session"), "demo")},
			"exp":       exp,
		})
		if err != nil {
			http.Error(w, "mint failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_at": exp})
	})
	mux.HandleFunc("POST /demo/ask", func(w http.ResponseWriter, r *http.Request) {
		session := orDefault(r.URL.Query().Get("session"), "demo")
		prompt, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		events := Tokens("answer: " + orDefault(strings.TrimSpace(string(prompt)), "hello"))
		w.WriteHeader(http.StatusAccepted)
		// The stream outlives the request, as an AI service's would.
		site.wg.Add(1)
		go site.stream(session, events)
	})
	return site
}

// stream publishes one answer, token by token, until done or Close.
func (s *Site) stream(session string, events [][]byte) {
	defer s.wg.Done()
	t := time.NewTicker(TokenDelay)
	defer t.Stop()
	for _, ev := range events {
		// The same stream on the plain and the durable (resumable) channel.
		if s.pub.Publish(s.ctx, "ai:stream:"+session, ev) != nil || s.pub.Publish(s.ctx, "ai:durable:"+session, ev) != nil {
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
