package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/bridge"
	"github.com/wsgate/wsgate/proxy"
)

// adminHandler serves the admin listener: health, readiness, metrics and
// the publish API. It must not be exposed publicly: /publish has no auth.
func adminHandler(v *auth.Verifier, h *proxy.Handler, hub *bridge.Hub, reg *prometheus.Registry, maxBytes int64) http.Handler {
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
		channel, payload, err := readPublish(r, maxBytes)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tracePublished(r.Context(), channel, len(payload)) // tracing hook (observe.go)
		if err := hub.Publish(r.Context(), channel, payload); err != nil {
			status := http.StatusBadGateway
			if errors.Is(err, bridge.ErrUnavailable) {
				status = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), status)
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
