package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// route is a compiled Route. Static after construction.
type route struct {
	cfg       Route
	params    []string // path parameters, in order
	tail      string   // the {name...} parameter, if any
	upstream  template
	subscribe []template
	publish   template
}

func newRoute(cfg Route) (*route, error) {
	params, err := pathParams(cfg.Path)
	if err != nil {
		return nil, err
	}
	rt := &route{cfg: cfg, params: params}
	if strings.HasSuffix(cfg.Path, "...}") {
		rt.tail = params[len(params)-1]
	}
	if cfg.Upstream != "" {
		rt.upstream = mustTemplate(cfg.Upstream, params, false)
	}
	for _, s := range cfg.Subscribe {
		rt.subscribe = append(rt.subscribe, mustTemplate(s, params, true))
	}
	if cfg.Publish != "" {
		rt.publish = mustTemplate(cfg.Publish, params, true)
	}
	return rt, nil
}

func (rt *route) bridged() bool { return len(rt.cfg.Subscribe) > 0 || rt.cfg.Publish != "" }

// passthrough reports whether the route relays frames between two raw
// connections (relay.go): it has an upstream and no channels, and its
// clients authenticate with the upgrade (a first-message client is
// accepted through coder/websocket before the upstream exists).
func (rt *route) passthrough() bool {
	return rt.cfg.Upstream != "" && !rt.bridged() && !rt.firstMessage()
}

// wireClient reports whether the client leg is a wire (relay.go) rather
// than a coder/websocket Conn: on passthrough routes, and on routes that
// only deliver channel messages (wsgate reads no client message there).
func (rt *route) wireClient() bool {
	return rt.passthrough() || rt.cfg.Upstream == "" && rt.cfg.Publish == "" && len(rt.cfg.Subscribe) > 0 && !rt.firstMessage()
}

// direction labels message flow for metrics and logs.
type direction uint8

const (
	clientToUpstream direction = iota
	upstreamToClient
	clientToChannel
	channelToClient
	numDirections
)

func (d direction) String() string {
	return [...]string{"client_to_upstream", "upstream_to_client", "client_to_channel", "channel_to_client"}[d]
}

// checkParams refuses path parameter values that are dot segments, raw or
// percent-encoded: an upstream that normalises its path would resolve
// /ws/reports/{id} with id ".." outside the route's prefix. A tail
// parameter is checked segment by segment.
func (rt *route) checkParams(r *http.Request) error {
	for _, name := range rt.params {
		v := r.PathValue(name)
		segs := []string{v}
		if name == rt.tail {
			segs = strings.Split(v, "/")
		}
		for _, seg := range segs {
			if seg == "." || seg == ".." {
				return fmt.Errorf("%w: {%s} is a dot segment", ErrBadParam, name)
			}
		}
	}
	return nil
}

// upstreamURL fills the upstream template with escaped path parameters; a
// tail parameter keeps its slashes between escaped segments.
func (rt *route) upstreamURL(r *http.Request) string {
	return rt.upstream.expand(func(name string) string {
		v := r.PathValue(name)
		if name != rt.tail {
			return url.PathEscape(v)
		}
		segs := strings.Split(v, "/")
		for i, seg := range segs {
			segs[i] = url.PathEscape(seg)
		}
		return strings.Join(segs, "/")
	})
}

// cleanPath is net/http's path canonicalisation: a path that differs from
// its clean form is answered 404 rather than redirected (a redirect would
// echo the query, and with it the token, in Location).
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}
