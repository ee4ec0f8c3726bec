package topology

import (
	"bytes"
)

// cloudEventsDecoder decodes the CloudEvents Kafka protocol binding, binary
// and structured mode. See NewDecoder for the rules.
type cloudEventsDecoder struct {
	st decodeState
}

// The attribute names of structured mode, in the roles of the json format's
// fields, for errors.
var cloudEventsFields = FieldNames{
	ID:          "id",
	Type:        "type",
	AggregateID: "subject",
	Version:     "sequence",
	CreatedAt:   "time",
	Data:        "data",
}

// The header names of binary mode, in the same roles.
var cloudEventsHeaders = FieldNames{
	ID:          "ce_id",
	Type:        "ce_type",
	AggregateID: "ce_subject",
	Version:     "ce_sequence",
	CreatedAt:   "ce_time",
	Data:        "value",
}

func (d *cloudEventsDecoder) Decode(r *Record, ev *Event) error {
	var contentType []byte
	hasContentType, binary := false, false
	for i := range r.Headers {
		switch h := &r.Headers[i]; h.Key {
		case "ce_specversion", "ce_type":
			binary = true
		case "content-type", "Content-Type":
			contentType, hasContentType = h.Value, true
		}
	}
	media := mediaType(contentType)
	switch {
	case hasPrefixFold(media, "application/cloudevents-batch"):
		return decodeError(r, "content-type", "batched mode (%s) is not supported; produce one event per record", preview(contentType))
	case hasPrefixFold(media, "application/cloudevents"):
		if !bytes.EqualFold(media, []byte("application/cloudevents+json")) {
			return decodeError(r, "content-type", "structured mode in format %s is not supported; use application/cloudevents+json or binary mode", preview(contentType))
		}
		return d.structured(r, ev)
	case binary:
		return d.binary(r, ev, media, hasContentType)
	}
	return decodeError(r, "", "not a CloudEvent: binary mode needs the headers ce_specversion, ce_id and ce_type; structured mode needs the header content-type: application/cloudevents+json")
}

// structured decodes a record whose value is a whole CloudEvent in JSON.
func (d *cloudEventsDecoder) structured(r *Record, ev *Event) error {
	st := &d.st
	if err := st.begin(r); err != nil {
		return err
	}
	var m envelope
	var v, base64 value
	for {
		name, more, err := st.next(r, &v)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		switch string(name) {
		case "type":
			m.typ = v
		case "id":
			m.id = v
		case "subject":
			m.aggregateID = v
		case "sequence":
			m.version = v
		case "time":
			m.createdAt = v
		case "data":
			m.data = v
		case "data_base64":
			base64 = v
		}
	}
	if m.id.kind == kindNone || m.id.kind == kindNull || string(m.id.raw) == `""` {
		return decodeError(r, "id", "missing or empty; every CloudEvent needs an id")
	}
	switch base64.kind {
	case kindNone, kindNull:
	case kindString:
		if m.data.kind != kindNone {
			return decodeError(r, "data_base64", "set together with data; a CloudEvent has one or the other")
		}
		m.data = base64 // the base64 text, as a JSON string
	default:
		return decodeError(r, "data_base64", "want a base64 string, got %s", preview(base64.raw))
	}
	return st.build(r, ev, &m, &cloudEventsFields)
}

// binary decodes a record whose headers carry the attributes and whose value
// is the data.
func (d *cloudEventsDecoder) binary(r *Record, ev *Event, media []byte, hasContentType bool) error {
	st := &d.st
	f := &cloudEventsHeaders
	*ev = Event{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Timestamp: r.Timestamp,
		CreatedAt: r.Timestamp,
		Data:      nullJSON,
	}
	var id, typ, tm, subject, seq []byte
	var hasID, hasTime, hasSubject, hasSeq bool
	for i := range r.Headers {
		switch h := &r.Headers[i]; h.Key {
		case "ce_id":
			id, hasID = h.Value, true
		case "ce_type":
			typ = h.Value
		case "ce_time":
			tm, hasTime = h.Value, true
		case "ce_subject":
			subject, hasSubject = h.Value, true
		case "ce_sequence":
			seq, hasSeq = h.Value, true
		}
	}
	if len(typ) == 0 {
		return decodeError(r, f.Type, "missing or empty; every CloudEvent needs a type")
	}
	ev.Type = st.intern(typ)
	if !hasID || len(id) == 0 {
		return decodeError(r, f.ID, "missing or empty; every CloudEvent needs an id")
	}
	ev.ID = string(id)
	switch {
	case hasSubject:
		ev.AggregateID = string(subject)
	case len(r.Key) > 0:
		ev.AggregateID = string(r.Key)
	default:
		return decodeError(r, f.AggregateID, "missing, and the record has no key to fall back on; set ce_subject, or key the records by aggregate")
	}
	if hasSeq {
		v, err := parseInt64(seq)
		if err != nil {
			return decodeError(r, f.Version, "%v, got %q", err, seq)
		}
		ev.Version = v
	}
	if hasTime {
		if err := ev.CreatedAt.UnmarshalText(tm); err != nil {
			return decodeError(r, f.CreatedAt, "want an RFC 3339 time such as \"2006-01-02T15:04:05.999999999Z\", got %q", tm)
		}
	}

	switch {
	case !hasContentType || isJSONMediaType(media):
		if len(bytes.TrimSpace(r.Value)) == 0 {
			return nil // no data: null
		}
		if err := st.scan.validJSON(r.Value); err != nil {
			return decodeError(r, f.Data, "content type %s: %v", contentTypeName(media, hasContentType), err)
		}
		ev.Data = bytes.TrimSpace(r.Value)
	case hasPrefixFold(media, "text/"):
		ev.Data = appendJSONString(make([]byte, 0, len(r.Value)+2), r.Value)
	default:
		return decodeError(r, "content-type", "unsupported content type %q; kreplay reads JSON (application/json, text/json, */*+json) and text/* data", media)
	}
	return nil
}

func contentTypeName(media []byte, has bool) string {
	if !has {
		return "absent, so JSON"
	}
	return string(media)
}

// mediaType returns the media type of a content type: what precedes the
// parameters, without surrounding white space.
func mediaType(contentType []byte) []byte {
	if i := bytes.IndexByte(contentType, ';'); i >= 0 {
		contentType = contentType[:i]
	}
	return bytes.TrimSpace(contentType)
}

// isJSONMediaType reports whether the media type is JSON:
// application/json, text/json, or a type with the +json suffix.
func isJSONMediaType(media []byte) bool {
	return bytes.EqualFold(media, []byte("application/json")) ||
		bytes.EqualFold(media, []byte("text/json")) ||
		hasSuffixFold(media, "+json")
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

func hasSuffixFold(b []byte, suffix string) bool {
	return len(b) >= len(suffix) && bytes.EqualFold(b[len(b)-len(suffix):], []byte(suffix))
}
