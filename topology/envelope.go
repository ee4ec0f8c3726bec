package topology

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event is one decoded record: the envelope of a domain event, its payload
// and where it sits in Kafka.
type Event struct {
	ID          string
	Type        string
	AggregateID string
	Version     int64
	CreatedAt   time.Time
	// Data is the raw JSON of the payload, `null` when absent. It may alias
	// the record value, so it is valid as long as the record is, and it is
	// read-only.
	Data      []byte
	Topic     string
	Partition int32
	Offset    int64
	Timestamp time.Time // the Kafka record timestamp
}

// Record is a Kafka record as the decoders read it. The processor fills it
// from its Kafka client's record; the config model imports no Kafka client.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}

// Header is a record header.
type Header struct {
	Key   string
	Value []byte
}

// Decoder decodes the records of one source into events.
type Decoder interface {
	// Decode fills ev from r, or returns a *DecodeError. It overwrites
	// every field of ev. It keeps no reference to r or its headers; ev.Data
	// may alias r.Value.
	Decode(r *Record, ev *Event) error
}

// NewDecoder returns the decoder of the source's format. Empty settings mean
// their defaults.
//
// A decoder keeps scratch buffers and a table of the event types it has
// seen, so that decoding an event allocates almost nothing. It is therefore
// not safe for concurrent use: give each goroutine its own.
//
// # The json format
//
// The record value is a JSON object; its members are found by the source's
// field names (defaults in brackets):
//   - type [type]: the event type, a non-empty string. Required.
//   - id [id]: a string, or a number kept as written. Absent or "":
//     "<topic>/<partition>/<offset>".
//   - aggregate_id [aggregate_id]: a string, or a number kept as written.
//     Absent: the record key; an error when the record has no key.
//   - version [version]: an integer, or a string holding one. Absent: 0.
//   - created_at [created_at]: an RFC 3339 string, fractional seconds up to
//     nanoseconds. Absent: the record timestamp.
//   - data [data]: the payload, any JSON value, kept as written. Absent: null.
//
// A member whose value is null counts as absent. Other members are ignored.
// When a name appears twice, the last one wins. The whole value must be
// valid JSON; strings are not checked for valid UTF-8 and may hold \u0000,
// which PostgreSQL refuses in jsonb and text, so a handler that stores such
// an event fails when it is applied, under the projection's on_error.
//
// # The cloudevents format
//
// The CloudEvents Kafka protocol binding, in two modes.
//
// Structured mode, when the content-type header starts with
// application/cloudevents+json: the value is a JSON object with the
// attributes id (required), type (required), time, subject (the aggregate
// id; absent: the record key), sequence (the version, a string or an
// integer), and data (any JSON) or data_base64 (its base64 text becomes Data
// as a JSON string). The rules of the json format apply.
//
// Binary mode, when the record has a ce_specversion or ce_type header: the
// headers ce_id (required), ce_type (required), ce_time (RFC 3339; absent:
// the record timestamp), ce_subject (absent: the record key) and ce_sequence
// (a decimal integer; absent: 0) carry the attributes and the value is the
// data. With no content-type, or a JSON one (application/json, text/json or
// any type ending in +json), the value must be valid JSON (empty is null);
// with text/* it becomes a JSON string; other content types are errors.
//
// Structured mode wins when a record looks like both.
func NewDecoder(s Source) (Decoder, error) {
	switch s.Format {
	case "", FormatJSON:
		f := s.Fields
		f.setDefaults()
		if errs := f.validate(); len(errs) > 0 {
			return nil, fmt.Errorf("source %q: %w", s.Topic, errs[0])
		}
		return &jsonDecoder{fields: f}, nil
	case FormatCloudEvents:
		return &cloudEventsDecoder{}, nil
	}
	return nil, fmt.Errorf("source %q: unknown format %q (valid: %s)", s.Topic, s.Format, strings.Join(formats, ", "))
}

// DecodeError is a record that cannot be decoded into an event.
type DecodeError struct {
	Topic     string
	Partition int32
	Offset    int64
	Field     string // the envelope field or header at fault; empty for the record as a whole
	Reason    string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode topic %q partition %d offset %d: %s", e.Topic, e.Partition, e.Offset, e.Detail())
}

// Detail is what is wrong with the record, without where it is: the field at fault, if any,
// and the reason.
func (e *DecodeError) Detail() string {
	if e.Field != "" {
		return fmt.Sprintf("field %q: %s", e.Field, e.Reason)
	}
	return e.Reason
}

func decodeError(r *Record, field, format string, args ...any) error {
	return &DecodeError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// nullJSON is the Data of an event without a payload.
var nullJSON = []byte("null")

// envelope are the members of an envelope object that make an event.
type envelope struct {
	id, typ, aggregateID, version, createdAt, data value
}

// decodeState is what the decoders share: the scanner, the event types met
// so far and a scratch buffer.
type decodeState struct {
	scan  scanner
	types map[string]string
	buf   []byte
}

// maxTypes bounds the table of interned event types, against streams with
// unbounded type names; types beyond it are decoded, just not interned.
const (
	maxTypes   = 4096
	maxTypeLen = 256
)

// intern returns b as a string, without allocating for a type seen before.
func (st *decodeState) intern(b []byte) string {
	if t, ok := st.types[string(b)]; ok {
		return t
	}
	t := string(b)
	if len(st.types) < maxTypes && len(t) <= maxTypeLen {
		if st.types == nil {
			st.types = make(map[string]string)
		}
		st.types[t] = t
	}
	return t
}

// text returns the contents of a string value, unescaped.
func (st *decodeState) text(v value) []byte {
	if !v.escaped {
		return v.raw[1 : len(v.raw)-1]
	}
	st.buf = unescape(st.buf[:0], v.raw)
	return st.buf
}

// begin reads the opening of the top-level object of r's value.
func (st *decodeState) begin(r *Record) error {
	st.scan.reset(r.Value)
	if err := st.scan.beginObject(); err != nil {
		return decodeError(r, "", "%v", err)
	}
	return nil
}

// next reads the next member of the top-level object and returns its key,
// unescaped, or false after the last member, when it has also checked that
// nothing follows the object.
func (st *decodeState) next(r *Record, v *value) ([]byte, bool, error) {
	var key value
	more, err := st.scan.member(&key, v)
	if err == nil && !more {
		err = st.scan.end()
	}
	if err != nil {
		return nil, false, decodeError(r, "", "%v", err)
	}
	if !more {
		return nil, false, nil
	}
	if key.escaped {
		st.buf = unescape(st.buf[:0], key.raw)
		return st.buf, true, nil
	}
	return key.raw[1 : len(key.raw)-1], true, nil
}

// build fills ev from the members of an envelope object; names are the
// envelope's field names, for errors.
func (st *decodeState) build(r *Record, ev *Event, m *envelope, names *FieldNames) error {
	*ev = Event{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Timestamp: r.Timestamp,
		CreatedAt: r.Timestamp,
		Data:      nullJSON,
	}

	switch m.typ.kind {
	case kindNone, kindNull:
		return decodeError(r, names.Type, "missing; every event needs a type")
	case kindString:
		ev.Type = st.intern(st.text(m.typ))
		if ev.Type == "" {
			return decodeError(r, names.Type, "empty; every event needs a type")
		}
	default:
		return decodeError(r, names.Type, "want a string, got %s", preview(m.typ.raw))
	}

	switch m.id.kind {
	case kindNone, kindNull:
	case kindString:
		ev.ID = string(st.text(m.id))
	case kindNumber:
		ev.ID = string(m.id.raw)
	default:
		return decodeError(r, names.ID, "want a string or a number, got %s", preview(m.id.raw))
	}
	if ev.ID == "" {
		st.buf = append(append(st.buf[:0], r.Topic...), '/')
		st.buf = append(strconv.AppendInt(st.buf, int64(r.Partition), 10), '/')
		ev.ID = string(strconv.AppendInt(st.buf, r.Offset, 10))
	}

	switch m.aggregateID.kind {
	case kindNone, kindNull:
		if len(r.Key) == 0 {
			return decodeError(r, names.AggregateID, "missing, and the record has no key to fall back on; set the field, or key the records by aggregate")
		}
		ev.AggregateID = string(r.Key)
	case kindString:
		ev.AggregateID = string(st.text(m.aggregateID))
	case kindNumber:
		ev.AggregateID = string(m.aggregateID.raw)
	default:
		return decodeError(r, names.AggregateID, "want a string or a number, got %s", preview(m.aggregateID.raw))
	}

	switch m.version.kind {
	case kindNone, kindNull:
	case kindNumber, kindString:
		digits := m.version.raw
		if m.version.kind == kindString {
			digits = st.text(m.version)
		}
		v, err := parseInt64(digits)
		if err != nil {
			return decodeError(r, names.Version, "%v, got %s", err, preview(m.version.raw))
		}
		ev.Version = v
	default:
		return decodeError(r, names.Version, "want an integer, got %s", preview(m.version.raw))
	}

	switch m.createdAt.kind {
	case kindNone, kindNull:
	case kindString:
		if err := ev.CreatedAt.UnmarshalText(st.text(m.createdAt)); err != nil {
			return decodeError(r, names.CreatedAt, "want an RFC 3339 time such as \"2006-01-02T15:04:05.999999999Z\", got %s", preview(m.createdAt.raw))
		}
	default:
		return decodeError(r, names.CreatedAt, "want an RFC 3339 string, got %s", preview(m.createdAt.raw))
	}

	if m.data.kind != kindNone {
		ev.Data = m.data.raw
	}
	return nil
}

// parseInt64 parses a decimal integer, with an optional minus sign.
func parseInt64(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, errWantInteger
	}
	const limit = 1 << 63 // -limit is the smallest int64, limit-1 the largest
	var n uint64
	for _, c := range b {
		if !isDigit(c) {
			return 0, errWantInteger
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, errIntRange
		}
		n = n*10 + d
	}
	if neg {
		return -int64(n), nil // n == limit wraps to the smallest int64, as it should
	}
	if n == limit {
		return 0, errIntRange
	}
	return int64(n), nil
}

var (
	errWantInteger = errors.New("want an integer")
	errIntRange    = errors.New("want an integer that fits in 64 bits")
)

// preview shows a value in an error message, shortened.
func preview(raw []byte) string {
	const limit = 64
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "an empty value"
	}
	s := string(raw)
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Arg is the value of a handler argument for this event: what @event_id, @type, ... stand for.
// @data is the payload's JSON text.
func (e *Event) Arg(a Arg) any {
	switch a {
	case ArgEventID:
		return e.ID
	case ArgType:
		return e.Type
	case ArgAggregateID:
		return e.AggregateID
	case ArgVersion:
		return e.Version
	case ArgCreatedAt:
		return e.CreatedAt
	case ArgData:
		return e.Data
	case ArgTopic:
		return e.Topic
	case ArgPartition:
		return e.Partition
	case ArgOffset:
		return e.Offset
	}
	return nil
}
