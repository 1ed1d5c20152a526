// Package closecode is wsgate's one table of WebSocket close codes: which
// codes wsgate itself sends, why, and what a client should do about each.
// The README's close-code table is checked against Table by a test.
package closecode

import "github.com/coder/websocket"

// Codes wsgate sends on its own account. Codes an upstream sends are passed
// through unchanged (except 1005/1006/1015, which never go on the wire).
const (
	Normal          = websocket.StatusNormalClosure   // 1000
	GoingAway       = websocket.StatusGoingAway       // 1001
	ProtocolError   = websocket.StatusProtocolError   // 1002
	PolicyViolation = websocket.StatusPolicyViolation // 1008
	MessageTooBig   = websocket.StatusMessageTooBig   // 1009
	InternalError   = websocket.StatusInternalError   // 1011
	TryAgainLater   = websocket.StatusTryAgainLater   // 1013
	BadGateway      = websocket.StatusBadGateway      // 1014

	TokenExpired    websocket.StatusCode = 4001
	Forbidden       websocket.StatusCode = 4003
	SlowConsumer    websocket.StatusCode = 4008
	SubscriptionGap websocket.StatusCode = 4009
	// First-message auth (routes with auth: first_message): the socket is
	// open before the token is known, so a refusal is a close, not a status.
	Unauthorized websocket.StatusCode = 4401
	AccessDenied websocket.StatusCode = 4403
)

// Action is what a well-behaved client does after a close.
type Action string

// Client actions, as the browser client implements them.
const (
	Stop         Action = "stop and surface the reason"
	Backoff      Action = "reconnect with backoff and jitter"
	RefreshToken Action = "fetch a new token, reconnect at once"
	Refetch      Action = "reconnect with backoff, refetch state"
	None         Action = "no reconnect (unless configured)"
	Reauth       Action = "fetch a new token, reconnect with backoff"
)

// Entry documents one close code.
type Entry struct {
	Code   websocket.StatusCode
	Reason string // the reason text wsgate sends, where it sends its own
	When   string
	Client Action
}

// Table lists every code wsgate sends of its own, in code order.
var Table = []Entry{
	{Normal, "", "the upstream closed normally (passed through; also sent for a peer's 1005 \"no status\")", None},
	{GoingAway, "server shutting down", "wsgate drains on SIGTERM (spread over shutdown_grace), or the client left (sent to the upstream)", Backoff},
	{ProtocolError, "", "the peer broke the WebSocket protocol (unmasked client frame, bad control frame, RSV bits)", Stop},
	{PolicyViolation, "message rate limit exceeded", "the connection sent more messages than limits.messages_per_second allows, or more pings and pongs than limits.control_frames_per_second (reason \"control frame rate exceeded\"; an upstream that does gets 1008 and the client 1014), or its user published more than limits.publish_bytes_per_second (reason \"publish byte rate exceeded\")", Stop},
	{MessageTooBig, "message too big", "a message over max_message_bytes; sent to the sender and its peer; also a client message over a durable channel's history.max_message_bytes (reason \"message too big for history\")", Stop},
	{InternalError, "upstream heartbeat timeout", "the upstream stopped answering pings (or stopped reading: \"upstream write timeout\"), or an internal failure", Backoff},
	{TryAgainLater, "publish failed", "a client message on a publish route could not be published (Redis down); also passed through from the upstream", Backoff},
	{BadGateway, "upstream went away", "the upstream connection dropped without a close frame, or the upstream broke the protocol (reason \"upstream protocol error\"; the upstream gets 1002)", Backoff},
	{TokenExpired, "token expired", "the token's exp (plus auth.leeway) passed while connected; also sent to the upstream", RefreshToken},
	{Forbidden, "route does not accept client messages", "a client message on a route with neither upstream nor publish", Stop},
	{SlowConsumer, "slow consumer", "the client could not keep up with its subscriptions; its queue overflowed", Backoff},
	{SubscriptionGap, "subscription interrupted", "Redis reconnected while the client was subscribed: messages in the gap may be lost", Refetch},
	{Unauthorized, "auth failed: no auth message in time", "first-message auth: no auth message within auth.first_message_timeout, a message that is not {\"type\":\"auth\",\"token\":...}, or a missing, bad or expired token (the reason says which: \"auth failed: token expired\")", Reauth},
	{AccessDenied, "token does not grant this path", "first-message auth: the token is valid but a require rule refuses the path", Stop},
}

// Side is a party to a session, as the closes metric and the logs name it:
// who caused a close.
type Side string

// Sides of a session.
const (
	ByClient   Side = "client"
	ByUpstream Side = "upstream"
	ByWsgate   Side = "wsgate"
)

// Event is one reason a session ends, the same on every route kind: the
// code each leg is sent, the reason both get, and who caused it. A session
// raises exactly one Event, through one function.
type Event struct {
	Client   websocket.StatusCode // sent to the client
	Upstream websocket.StatusCode // sent to the upstream, if there is one
	Reason   string
	By       Side
	// Brief is the side whose close handshake gets only a moment: it sent
	// bytes that were refused, or stopped reading, so its stream cannot be
	// trusted to carry the handshake. "" means neither.
	Brief Side
}

// The events wsgate raises on its own account. A close a peer sends is
// ClientClosed or UpstreamClosed.
var (
	ServerShutdown        = Event{GoingAway, GoingAway, "server shutting down", ByWsgate, ""}
	ClientGone            = Event{GoingAway, GoingAway, "client went away", ByClient, ""}
	ClientHeartbeat       = Event{GoingAway, GoingAway, "client heartbeat timeout", ByClient, ""}
	ClientWriteTimeout    = Event{GoingAway, GoingAway, "client write timeout", ByClient, ByClient}
	ClientProtocolError   = Event{ProtocolError, GoingAway, "protocol error", ByClient, ByClient}
	ClientTooBig          = Event{MessageTooBig, MessageTooBig, "message too big", ByClient, ByClient}
	ClientControlFlood    = Event{PolicyViolation, GoingAway, "control frame rate exceeded", ByClient, ByClient}
	MessageRate           = Event{PolicyViolation, GoingAway, "message rate limit exceeded", ByWsgate, ""}
	UpstreamGone          = Event{BadGateway, GoingAway, "upstream went away", ByUpstream, ""}
	UpstreamProtocolError = Event{BadGateway, ProtocolError, "upstream protocol error", ByUpstream, ByUpstream}
	UpstreamTooBig        = Event{MessageTooBig, MessageTooBig, "message too big", ByUpstream, ByUpstream}
	UpstreamControlFlood  = Event{BadGateway, PolicyViolation, "upstream control frame rate exceeded", ByUpstream, ByUpstream}
	UpstreamHeartbeat     = Event{InternalError, GoingAway, "upstream heartbeat timeout", ByUpstream, ""}
	UpstreamWriteTimeout  = Event{InternalError, GoingAway, "upstream write timeout", ByUpstream, ByUpstream}
	PublishFailed         = Event{TryAgainLater, GoingAway, "publish failed", ByWsgate, ""}
	PublishRateExceeded   = Event{PolicyViolation, GoingAway, "publish byte rate exceeded", ByClient, ""}
	PublishTooBig         = Event{MessageTooBig, GoingAway, "message too big for history", ByClient, ""}
	TokenExpiry           = Event{TokenExpired, TokenExpired, "token expired", ByWsgate, ""}
	ClientMessagesRefused = Event{Forbidden, GoingAway, "route does not accept client messages", ByWsgate, ""}
	SlowConsumerDropped   = Event{SlowConsumer, GoingAway, "slow consumer", ByWsgate, ByClient}
	SubscriptionLost      = Event{SubscriptionGap, GoingAway, "subscription interrupted", ByWsgate, ""}
	// First-message auth refusals close the client before any session or
	// upstream exists (proxy/firstmessage.go); the reason says which check.
	AuthFailed = Event{Unauthorized, GoingAway, "auth failed", ByClient, ByClient}
	AuthDenied = Event{AccessDenied, GoingAway, "token does not grant this path", ByClient, ""}
)

// Events lists every Event wsgate raises on its own account.
var Events = []Event{
	ServerShutdown, ClientGone, ClientHeartbeat, ClientWriteTimeout, ClientProtocolError, ClientTooBig,
	ClientControlFlood, MessageRate, UpstreamGone, UpstreamProtocolError, UpstreamTooBig, UpstreamControlFlood,
	UpstreamHeartbeat, UpstreamWriteTimeout, PublishFailed, PublishRateExceeded, PublishTooBig, TokenExpiry, ClientMessagesRefused,
	SlowConsumerDropped, SubscriptionLost, AuthFailed, AuthDenied,
}

// ClientClosed is the client's own close: its code goes to the upstream
// (see Forwardable).
func ClientClosed(code websocket.StatusCode, reason string) Event {
	return Event{code, Forwardable(code, GoingAway), reason, ByClient, ""}
}

// UpstreamClosed is the upstream's own close: its code goes to the client
// (see Forwardable).
func UpstreamClosed(code websocket.StatusCode, reason string) Event {
	return Event{Forwardable(code, BadGateway), code, reason, ByUpstream, ""}
}

// Lookup returns the entry for code, if wsgate sends it on its own account.
func Lookup(code websocket.StatusCode) (Entry, bool) {
	for _, e := range Table {
		if e.Code == code {
			return e, true
		}
	}
	return Entry{}, false
}

// Forwardable maps a close code received from one leg to the code sent to the
// other leg. Codes that must never appear on the wire (1005 no status, 1006
// abnormal, 1015 TLS) and values outside the ranges a peer may send are
// replaced: 1005 becomes 1000; the others become fallback.
func Forwardable(code, fallback websocket.StatusCode) websocket.StatusCode {
	switch {
	case code == websocket.StatusNoStatusRcvd:
		return Normal
	case code == websocket.StatusAbnormalClosure, code == websocket.StatusTLSHandshake:
		return fallback
	case code >= 1000 && code <= 1014 && code != 1004:
		return code
	case code >= 3000 && code <= 4999:
		return code
	default:
		return fallback
	}
}
