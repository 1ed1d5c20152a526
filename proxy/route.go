package proxy

// route is a compiled Route. Static after construction.
type route struct {
	cfg       Route
	upstream  template
	subscribe []template
	publish   template
}

func newRoute(cfg Route) (*route, error) {
	params, err := pathParams(cfg.Path)
	if err != nil {
		return nil, err
	}
	rt := &route{cfg: cfg}
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
