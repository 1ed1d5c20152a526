package bridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wsgate/wsgate/internal/zero"
)

// Durable marks channels whose messages are kept, so a client that
// reconnects can resume from its last position.
type Durable struct {
	// Pattern matches channel names segment by segment (':' separates
	// segments); a "*" segment stands for any one non-empty segment, as a
	// channel template's placeholder does.
	Pattern string
	// Size is how many messages are kept per channel. Defaults to 1000.
	Size int
	// TTL is how long history outlives the last message. Defaults to 10m.
	TTL time.Duration
	// MaxMessageBytes is the largest message a durable channel takes: a
	// bigger one is refused with ErrTooLarge, so one producer cannot fill
	// Redis with history. Defaults to 256 KiB.
	MaxMessageBytes int
	// MaxReplayBytes caps the payload bytes one resume replays; a gap
	// larger than that is reported as not recovered ("too_large") and the
	// client refetches. Defaults to 8 MiB.
	MaxReplayBytes int64
}

// Defaults for Durable's zero values.
const (
	DefaultHistorySize            = 1000
	DefaultHistoryTTL             = 10 * time.Minute
	DefaultHistoryMaxMessageBytes = 256 << 10
	DefaultMaxReplayBytes         = 8 << 20
)

// Replay paging: a resuming client holds at most one page of history
// (entries and their envelopes) at a time, however long the gap.
const (
	replayPageEntries = 64
	replayPageBytes   = 256 << 10
)

func (d Durable) withDefaults() Durable {
	zero.Default(&d.Size, DefaultHistorySize)
	zero.Default(&d.TTL, DefaultHistoryTTL)
	zero.Default(&d.MaxMessageBytes, DefaultHistoryMaxMessageBytes)
	zero.Default(&d.MaxReplayBytes, DefaultMaxReplayBytes)
	return d
}

// durableFor returns the rule covering channel, if any.
func (h *Hub) durableFor(channel string) (Durable, bool) {
	for _, d := range h.cfg.Durable {
		if globMatch(d.Pattern, channel) {
			return d, true
		}
	}
	return Durable{}, false
}

// globMatch matches a channel against a pattern segment by segment (':'
// separates segments): a "*" segment stands for any one non-empty segment.
// Channel templates put every placeholder in a segment of its own, so their
// patterns need nothing more.
func globMatch(pattern, channel string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ":")
		c, crest, cmore := strings.Cut(channel, ":")
		if p == "*" && c == "" || p != "*" && p != c {
			return false
		}
		if !pmore || !cmore {
			return pmore == cmore
		}
		pattern, channel = prest, crest
	}
}

// streamID is a Redis stream entry ID, ms-seq.
type streamID struct{ ms, seq uint64 }

func parseStreamID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return streamID{ms, seq}, ok && err1 == nil && err2 == nil
}

func (a streamID) less(b streamID) bool { return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq }
func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// Position is where a message sits in a durable channel's history: the
// history's epoch (it changes when history is lost, e.g. Redis restarted
// without persistence) and the entry ID. Clients treat it as opaque.
type Position struct {
	Epoch string
	ID    streamID
}

// ParsePosition parses "epoch:ms-seq".
func ParsePosition(s string) (Position, error) {
	epoch, id, ok := strings.Cut(s, ":")
	sid, idOK := parseStreamID(id)
	if !ok || epoch == "" || !idOK || len(s) > 128 {
		return Position{}, errors.New("bridge: malformed position")
	}
	return Position{Epoch: epoch, ID: sid}, nil
}

func (p Position) String() string { return p.Epoch + ":" + p.ID.String() }

// After reports whether p comes after q in the same epoch.
func (p Position) After(q Position) bool { return p.Epoch == q.Epoch && q.ID.less(p.ID) }

// durableMarker prefixes the Pub/Sub payload of a recorded message with
// its position: "\x1ewsgate1 <epoch>:<id>\n<payload>". Only wsgate's own
// publish path writes it; subscribers strip it.
var durableMarker = []byte("\x1ewsgate1 ")

func markPayload(pos string, payload []byte) []byte {
	b := make([]byte, 0, len(durableMarker)+len(pos)+1+len(payload))
	b = append(append(append(b, durableMarker...), pos...), '\n')
	return append(b, payload...)
}

// unmark splits a marked payload; ok is false for a plain one.
func unmark(payload []byte) (pos Position, rest []byte, ok bool) {
	if !bytes.HasPrefix(payload, durableMarker) {
		return Position{}, payload, false
	}
	head, rest, found := bytes.Cut(payload[len(durableMarker):], []byte{'\n'})
	if !found {
		return Position{}, payload, false
	}
	p, err := ParsePosition(string(head))
	if err != nil {
		return Position{}, payload, false
	}
	return p, rest, true
}

// envelope wraps a durable message for clients: {"type":"wsgate.message",
// "pos":..., "data": <the payload, byte for byte, when it is JSON>} or
// "text" (a JSON string) or "binary" (base64) otherwise. Built once per
// message, shared by all subscribers.
func envelope(pos string, payload []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(payload) + len(pos) + 48)
	b.WriteString(`{"type":"wsgate.message","pos":`)
	if pos == "" {
		b.WriteString("null")
	} else {
		writeJSONString(&b, pos)
	}
	switch {
	case json.Valid(payload):
		b.WriteString(`,"data":`)
		b.Write(bytes.TrimSpace(payload))
	case utf8.Valid(payload):
		b.WriteString(`,"text":`)
		writeJSONString(&b, string(payload))
	default:
		b.WriteString(`,"binary":"`)
		b.WriteString(base64.StdEncoding.EncodeToString(payload))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s)
	b.Write(enc)
}

// Recovery tells a resuming client whether its gap was filled.
type Recovery struct {
	Recovered bool
	// Reason when not recovered: "too_old" (messages after the position
	// were trimmed), "epoch_changed" (history was lost or reset),
	// "too_large" (the gap holds more than the route's max_replay_bytes)
	// or "bad_position" (not a position wsgate issued).
	Reason   string
	Replayed int
	// Since is the position the client resumed from (when Recovered).
	Since Position
}

// Control renders the {"type":"wsgate.recovery",...} control message.
func (r Recovery) Control() []byte {
	if r.Recovered {
		return []byte(fmt.Sprintf(`{"type":"wsgate.recovery","recovered":true,"replayed":%d}`, r.Replayed))
	}
	return []byte(fmt.Sprintf(`{"type":"wsgate.recovery","recovered":false,"reason":%q}`, r.Reason))
}

// historyEntry is one retained message.
type historyEntry struct {
	id      streamID
	payload []byte
}

// historyInfo describes what a resume would replay.
type historyInfo struct {
	epoch      string
	maxDeleted streamID
	count      int
	bytes      int64
	last       streamID // the newest entry at the time of the call
}

// Replay checks whether a client can resume channel from since, and
// returns a cursor over the messages it missed. Call it after Subscribe on
// the same channel: messages published meanwhile arrive on both paths, and
// the caller skips live messages not After the last replayed one. The
// cursor reads history page by page, so a resuming client holds one page of
// messages at a time, not the whole gap.
func (h *Hub) Replay(ctx context.Context, channel, since string) (*ReplayCursor, Recovery, error) {
	d, ok := h.durableFor(channel)
	if !ok {
		return nil, Recovery{Reason: "bad_position"}, nil
	}
	d = d.withDefaults()
	pos, err := ParsePosition(since)
	if err != nil {
		h.metrics.replays.WithLabelValues("bad_position").Inc()
		return nil, Recovery{Reason: "bad_position"}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.CommandTimeout)
	defer cancel()
	info, err := h.broker.historyInfo(ctx, channel, pos.ID)
	if err != nil {
		return nil, Recovery{}, fmt.Errorf("replay: %w", err)
	}
	var rec Recovery
	switch {
	case info.epoch != pos.Epoch:
		rec.Reason = "epoch_changed"
	case pos.ID.less(info.maxDeleted):
		rec.Reason = "too_old"
	case info.bytes > d.MaxReplayBytes:
		rec.Reason = "too_large"
	default:
		rec.Recovered, rec.Since, rec.Replayed = true, pos, info.count
	}
	if !rec.Recovered {
		h.metrics.replays.WithLabelValues(rec.Reason).Inc()
		return nil, rec, nil
	}
	h.metrics.replays.WithLabelValues("recovered").Inc()
	return &ReplayCursor{hub: h, channel: channel, epoch: info.epoch, after: pos.ID, until: info.last, left: info.count}, rec, nil
}

// ReplayCursor reads a resume's missed messages in pages. It is used by one
// goroutine at a time.
type ReplayCursor struct {
	hub     *Hub
	channel string
	epoch   string
	after   streamID // the last entry returned
	until   streamID // the newest entry when the resume began
	left    int
}

// Next returns the next page of missed messages, in order, or none when the
// replay is complete. If history was trimmed under a slow reader, the
// replay ends early: the live stream then goes on from where it is, and the
// client sees the jump in positions.
func (c *ReplayCursor) Next(ctx context.Context) ([]*Message, error) {
	if c == nil || c.left <= 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.hub.cfg.CommandTimeout)
	defer cancel()
	entries, err := c.hub.broker.historyPage(ctx, c.channel, c.after, c.until, min(c.left, replayPageEntries), replayPageBytes)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if len(entries) == 0 {
		c.left = 0
		return nil, nil
	}
	msgs := make([]*Message, len(entries))
	for i, e := range entries {
		msgs[i] = newMessage(c.channel, e.payload, Position{Epoch: c.epoch, ID: e.id}, true)
	}
	c.after = entries[len(entries)-1].id
	c.left -= len(entries)
	c.hub.metrics.replayed.Add(float64(len(msgs)))
	return msgs, nil
}

// newMessage builds a Message; durable ones carry their client envelope.
func newMessage(channel string, payload []byte, pos Position, durable bool) *Message {
	m := &Message{Channel: channel, Payload: payload, Binary: !utf8.Valid(payload)}
	if durable {
		if pos.Epoch != "" {
			m.Pos = pos
		}
		p := ""
		if pos.Epoch != "" {
			p = pos.String()
		}
		m.Envelope = envelope(p, payload)
	}
	return m
}
