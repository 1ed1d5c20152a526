package main

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/proxy"
)

// adminHandler serves the admin listener: health, readiness, metrics and
// the publish API. With publishToken set, POST /publish requires it as a
// bearer token; without it, /publish is open to anyone who reaches the
// listener, which must then stay inside the pod or cluster.
func adminHandler(v *auth.Verifier, h *proxy.Handler, hub *bridge.Hub, reg *prometheus.Registry, maxBytes int64, publishToken string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if why := notReady(v, h); why != "" { // observe.go: the wsgate_ready gauge says the same
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("POST /publish", tracePublish(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { // tracing hook (observe.go)
		if publishToken != "" && !bearerMatches(r, publishToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wsgate-admin"`)
			http.Error(w, "publish requires the admin bearer token", http.StatusUnauthorized)
			return
		}
		channel, payload, err := readPublish(r, maxBytes)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tracePublished(r.Context(), channel, len(payload)) // tracing hook (observe.go)
		if err := hub.Publish(r.Context(), channel, payload); err != nil {
			if errors.Is(err, bridge.ErrTooLarge) {
				http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			// Any other failure is retryable for the producer: Redis is down,
			// or the publish failed after the bridge's own retry (logged).
			w.Header().Set("Retry-After", "1")
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	return mux
}

// readPublish accepts either ?channel=NAME with the raw payload as the body,
// or a JSON body {"channel": NAME, "data": <any JSON>} whose data is
// published byte for byte as it appears in the request.
func readPublish(r *http.Request, maxBytes int64) (string, []byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBytes))
	if err != nil {
		return "", nil, errors.New("body too large or unreadable")
	}
	if ch := r.URL.Query().Get("channel"); ch != "" {
		return ch, body, nil
	}
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return "", nil, errors.New(`body must be {"channel": "...", "data": ...} or use ?channel=`)
	}
	if req.Channel == "" || len(req.Data) == 0 {
		return "", nil, errors.New("channel and data are required")
	}
	return req.Channel, req.Data, nil
}

// bearerMatches compares the request's bearer token with want in constant
// time.
func bearerMatches(r *http.Request, want string) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(want)) == 1
}
