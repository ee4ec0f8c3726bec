package topology

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

var recordTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// record returns a record of topic bank at partition 3 offset 17.
func record(value string, headers ...string) *Record {
	r := &Record{Topic: "bank", Partition: 3, Offset: 17, Timestamp: recordTime, Value: []byte(value)}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Headers = append(r.Headers, Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return r
}

func keyed(r *Record, key string) *Record {
	r.Key = []byte(key)
	return r
}

func newDecoder(t testing.TB, s Source) Decoder {
	t.Helper()
	d, err := NewDecoder(s)
	require.NoError(t, err)
	return d
}

func decode(t *testing.T, d Decoder, r *Record) Event {
	t.Helper()
	var ev Event
	require.NoError(t, d.Decode(r, &ev))
	return ev
}

func TestJSONDecodeDesignDefaults(t *testing.T) {
	t.Parallel()
	d := newDecoder(t, Source{Topic: "bank"})
	r := record(`{"id":"e-1","type":"MoneyDeposited","aggregate_id":"acc-7","version":3,"created_at":"2024-01-02T03:04:05.123456789Z","data":{"amount":100}}`)
	ev := decode(t, d, r)
	require.Equal(t, Event{
		ID:          "e-1",
		Type:        "MoneyDeposited",
		AggregateID: "acc-7",
		Version:     3,
		CreatedAt:   time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC),
		Data:        []byte(`{"amount":100}`),
		Topic:       "bank",
		Partition:   3,
		Offset:      17,
		Timestamp:   recordTime,
	}, ev)
	// Data is a slice of the record value, not a copy.
	start := uintptr(unsafe.Pointer(unsafe.SliceData(r.Value)))
	data := uintptr(unsafe.Pointer(unsafe.SliceData(ev.Data)))
	require.True(t, data >= start && data < start+uintptr(len(r.Value)))
}

func TestJSONDecodeCustomFieldNames(t *testing.T) {
	t.Parallel()
	d := newDecoder(t, Source{Topic: "bank", Fields: FieldNames{
		ID: "eventId", Type: "eventType", AggregateID: "accountId", Version: "seq", CreatedAt: "occurredAt", Data: "payload",
	}})
	ev := decode(t, d, record(`{"eventId":"e-1","eventType":"Opened","accountId":"a","seq":"9","occurredAt":"2024-01-02T03:04:05+02:00","payload":[1,2],
		"id":"ignored","type":"ignored","data":"ignored"}`))
	require.Equal(t, "e-1", ev.ID)
	require.Equal(t, "Opened", ev.Type)
	require.Equal(t, "a", ev.AggregateID)
	require.Equal(t, int64(9), ev.Version)
	require.True(t, ev.CreatedAt.Equal(time.Date(2024, 1, 2, 1, 4, 5, 0, time.UTC)))
	_, offset := ev.CreatedAt.Zone()
	require.Equal(t, 2*3600, offset, "the offset is kept")
	require.Equal(t, `[1,2]`, string(ev.Data))
}

func TestJSONDecodeFallbacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		r    *Record
		want Event
	}{
		{
			name: "only a type and a key",
			r:    keyed(record(`{"type":"T"}`), "acc-1"),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "acc-1", CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "null means absent",
			r:    keyed(record(`{"type":"T","id":null,"aggregate_id":null,"version":null,"created_at":null}`), "acc-1"),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "acc-1", CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "an empty id is absent",
			r:    keyed(record(`{"type":"T","id":""}`), "k"),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "k", CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "data null is kept",
			r:    keyed(record(`{"type":"T","data":null}`), "k"),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "k", CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "the field wins over the key",
			r:    keyed(record(`{"type":"T","aggregate_id":"from-field"}`), "from-key"),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "from-field", CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "numbers as ids",
			r:    record(`{"type":"T","id":12345678901234567890,"aggregate_id":-1.5e3,"version":-7}`),
			want: Event{ID: "12345678901234567890", Type: "T", AggregateID: "-1.5e3", Version: -7, CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "escapes",
			r:    record(`{"typ\u0065":"Money\u00e9\"","id":"a\/b\\c\n","aggregate_id":"\ud83d\ude00","version":"\u0034\u0032","data":"\u00e9"}`),
			want: Event{ID: "a/b\\c\n", Type: "Moneyé\"", AggregateID: "😀", Version: 42, CreatedAt: recordTime, Data: []byte(`"\u00e9"`)},
		},
		{
			name: "lone surrogates become U+FFFD",
			r:    record(`{"type":"T\ud800","aggregate_id":"\udc00x"}`),
			want: Event{ID: "bank/3/17", Type: "T\uFFFD", AggregateID: "\uFFFDx", CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "duplicate keys: the last wins",
			r:    record(`{"type":"A","type":"B","aggregate_id":"x","data":1,"data":{"z":2}}`),
			want: Event{ID: "bank/3/17", Type: "B", AggregateID: "x", CreatedAt: recordTime, Data: []byte(`{"z":2}`)},
		},
		{
			name: "white space and unknown members",
			r:    record(" \t\r\n{ \"extra\" : [ {\"a\" : [true, false, null, -0.5e-3, \"\"]} ] , \"type\" :\"T\" , \"aggregate_id\": \"x\" , \"data\" : { } } \n"),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "x", CreatedAt: recordTime, Data: []byte(`{ }`)},
		},
		{
			name: "extreme versions",
			r:    record(`{"type":"T","aggregate_id":"x","version":-9223372036854775808}`),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "x", Version: -9223372036854775808, CreatedAt: recordTime, Data: []byte("null")},
		},
		{
			name: "fractional seconds of any precision",
			r:    record(`{"type":"T","aggregate_id":"x","created_at":"2024-01-02T03:04:05.1Z"}`),
			want: Event{ID: "bank/3/17", Type: "T", AggregateID: "x", CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 100000000, time.UTC), Data: []byte("null")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDecoder(t, Source{}) // a decoder is not safe for concurrent use
			want := tt.want
			want.Topic, want.Partition, want.Offset, want.Timestamp = "bank", 3, 17, recordTime
			require.Equal(t, want, decode(t, d, tt.r))
		})
	}
}

func TestJSONDecodeReuseOverwritesEveryField(t *testing.T) {
	t.Parallel()
	d := newDecoder(t, Source{})
	var ev Event
	require.NoError(t, d.Decode(record(`{"id":"1","type":"A","aggregate_id":"x","version":5,"created_at":"2020-01-01T00:00:00Z","data":[1]}`), &ev))
	r := keyed(record(`{"type":"B"}`), "k")
	r.Offset = 18
	require.NoError(t, d.Decode(r, &ev))
	require.Equal(t, Event{ID: "bank/3/18", Type: "B", AggregateID: "k", CreatedAt: recordTime, Data: []byte("null"),
		Topic: "bank", Partition: 3, Offset: 18, Timestamp: recordTime}, ev)
}

func TestJSONDecodeInternsTypes(t *testing.T) {
	t.Parallel()
	d := newDecoder(t, Source{})
	a := decode(t, d, record(`{"type":"MoneyDeposited","aggregate_id":"x"}`))
	b := decode(t, d, record(`{"type":"MoneyDeposited","aggregate_id":"y"}`))
	require.Equal(t, unsafe.StringData(a.Type), unsafe.StringData(b.Type))
}

func TestJSONDecodeAllocations(t *testing.T) {
	d := newDecoder(t, Source{})
	r := record(benchEvent)
	var ev Event
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.Decode(r, &ev); err != nil {
			panic(err)
		}
	})
	require.LessOrEqual(t, allocs, 2.0, "the id and the aggregate id only")
}

func TestJSONDecodeLargeEvent(t *testing.T) {
	t.Parallel()
	big := strings.Repeat(`{"k":"`+strings.Repeat("x", 1000)+`","n":[1,2.5,-3e4]},`, 1500)
	value := `{"type":"Big","aggregate_id":"x","data":[` + big + `{}]}`
	require.Greater(t, len(value), 1<<20)
	ev := decode(t, newDecoder(t, Source{}), record(value))
	require.Equal(t, "Big", ev.Type)
	require.True(t, json.Valid(ev.Data))
	require.Len(t, ev.Data, len(big)+4)
}

func TestJSONDecodeErrors(t *testing.T) {
	t.Parallel()
	deep := `{"type":"T","aggregate_id":"x","data":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`
	tests := []struct {
		name   string
		value  string
		field  string
		reason string
	}{
		{"empty value", ``, "", "invalid JSON at byte 0: want a JSON object, got an empty value"},
		{"not an object", `["type"]`, "", `invalid JSON at byte 0: want a JSON object, got "["`},
		{"a string", `"hello"`, "", `want a JSON object`},
		{"trailing garbage", `{"type":"T","aggregate_id":"x"} x`, "", `invalid JSON at byte 32: unexpected "x" after the JSON value`},
		{"two objects", `{"type":"T","aggregate_id":"x"}{}`, "", `unexpected "{" after the JSON value`},
		{"unterminated object", `{"type":"T"`, "", `unterminated object`},
		{"missing colon", `{"type" "T"}`, "", `want ':' after the object key`},
		{"trailing comma", `{"type":"T",}`, "", `want a string as the object key, got "}"`},
		{"single quotes", `{'type':'T'}`, "", `want a string as the object key`},
		{"invalid data", `{"type":"T","aggregate_id":"x","data":{"a":}}`, "", `want a value, got "}"`},
		{"invalid data array", `{"type":"T","aggregate_id":"x","data":[1 2]}`, "", `want ',' or ']' after an array element`},
		{"bad literal", `{"type":"T","data":tru}`, "", `want a value`},
		{"leading zero", `{"type":"T","data":01}`, "", `want ',' or '}' after an object member, got "1"`},
		{"bad fraction", `{"type":"T","data":1.}`, "", `want a digit after the decimal point`},
		{"bad exponent", `{"type":"T","data":1e+}`, "", `want a digit in the exponent`},
		{"control character", "{\"type\":\"T\x01\"}", "", `control character "\x01" in string; escape it`},
		{"bad escape", `{"type":"T\x"}`, "", `invalid escape "\\x" in string`},
		{"bad unicode escape", `{"type":"T\u12G4"}`, "", `invalid \u escape in string`},
		{"unterminated string", `{"type":"T`, "", `unterminated string`},
		{"too deep", deep, "", "nesting deeper than 10000 levels"},
		{"missing type", `{"aggregate_id":"x"}`, "type", "missing; every event needs a type"},
		{"null type", `{"type":null,"aggregate_id":"x"}`, "type", "missing; every event needs a type"},
		{"empty type", `{"type":"","aggregate_id":"x"}`, "type", "empty; every event needs a type"},
		{"numeric type", `{"type":12,"aggregate_id":"x"}`, "type", "want a string, got 12"},
		{"object id", `{"type":"T","id":{"a":1},"aggregate_id":"x"}`, "id", `want a string or a number, got {"a":1}`},
		{"no aggregate and no key", `{"type":"T"}`, "aggregate_id", "missing, and the record has no key to fall back on; set the field, or key the records by aggregate"},
		{"array aggregate", `{"type":"T","aggregate_id":[1]}`, "aggregate_id", "want a string or a number, got [1]"},
		{"fractional version", `{"type":"T","aggregate_id":"x","version":1.5}`, "version", "want an integer, got 1.5"},
		{"exponent version", `{"type":"T","aggregate_id":"x","version":1e3}`, "version", "want an integer, got 1e3"},
		{"overflowing version", `{"type":"T","aggregate_id":"x","version":9223372036854775808}`, "version", "want an integer that fits in 64 bits, got 9223372036854775808"},
		{"bool version", `{"type":"T","aggregate_id":"x","version":true}`, "version", "want an integer, got true"},
		{"string version", `{"type":"T","aggregate_id":"x","version":"v2"}`, "version", `want an integer, got "v2"`},
		{"empty string version", `{"type":"T","aggregate_id":"x","version":""}`, "version", `want an integer, got ""`},
		{"numeric created_at", `{"type":"T","aggregate_id":"x","created_at":12}`, "created_at", "want an RFC 3339 string, got 12"},
		{"bad created_at", `{"type":"T","aggregate_id":"x","created_at":"yesterday"}`, "created_at", `want an RFC 3339 time such as "2006-01-02T15:04:05.999999999Z", got "yesterday"`},
		{"created_at without zone", `{"type":"T","aggregate_id":"x","created_at":"2024-01-02T03:04:05"}`, "created_at", `got "2024-01-02T03:04:05"`},
		{"created_at out of range", `{"type":"T","aggregate_id":"x","created_at":"2024-02-30T03:04:05Z"}`, "created_at", `got "2024-02-30T03:04:05Z"`},
		{"long values are shortened", `{"type":"T","aggregate_id":"x","created_at":"` + strings.Repeat("é", 100) + `"}`, "created_at", `got "` + strings.Repeat("é", 31) + `...`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDecoder(t, Source{})
			var ev Event
			err := d.Decode(record(tt.value), &ev)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.Equal(t, "bank", de.Topic)
			require.Equal(t, int32(3), de.Partition)
			require.Equal(t, int64(17), de.Offset)
			require.Equal(t, tt.field, de.Field)
			require.Contains(t, de.Reason, tt.reason)
		})
	}
}

func TestDecodeErrorMessage(t *testing.T) {
	t.Parallel()
	err := error(&DecodeError{Topic: "bank", Partition: 3, Offset: 17, Field: "created_at", Reason: "want an RFC 3339 string, got 12"})
	require.EqualError(t, err, `decode topic "bank" partition 3 offset 17: field "created_at": want an RFC 3339 string, got 12`)
	err = &DecodeError{Topic: "bank", Partition: 3, Offset: 17, Reason: "invalid JSON at byte 0: want a JSON object, got an empty value"}
	require.EqualError(t, err, `decode topic "bank" partition 3 offset 17: invalid JSON at byte 0: want a JSON object, got an empty value`)

	d := newDecoder(t, Source{})
	var ev Event
	err = d.Decode(record(`{"type":"T","aggregate_id":"x","created_at":12}`), &ev)
	require.EqualError(t, err, `decode topic "bank" partition 3 offset 17: field "created_at": want an RFC 3339 string, got 12`)
}

func TestNewDecoderErrors(t *testing.T) {
	t.Parallel()
	_, err := NewDecoder(Source{Topic: "bank", Format: "avro"})
	require.EqualError(t, err, `source "bank": unknown format "avro" (valid: json, cloudevents)`)
	_, err = NewDecoder(Source{Topic: "bank", Fields: FieldNames{ID: "type"}})
	require.EqualError(t, err, `source "bank": fields.id and fields.type are both "type"; each envelope field needs its own JSON field`)
	_, err = NewDecoder(Source{Topic: "bank", Fields: FieldNames{Data: " "}})
	require.ErrorContains(t, err, `fields.data is blank`)
}

func TestCloudEventsBinary(t *testing.T) {
	t.Parallel()
	d := newDecoder(t, Source{Topic: "bank", Format: FormatCloudEvents})
	ev := decode(t, d, keyed(record(`{"amount":100}`,
		"ce_specversion", "1.0",
		"ce_id", "e-1",
		"ce_type", "MoneyDeposited",
		"ce_source", "/bank",
		"ce_time", "2024-01-02T03:04:05.5Z",
		"ce_subject", "acc-7",
		"ce_sequence", "42",
		"content-type", "application/json; charset=utf-8",
	), "key"))
	require.Equal(t, Event{
		ID: "e-1", Type: "MoneyDeposited", AggregateID: "acc-7", Version: 42,
		CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 500000000, time.UTC),
		Data:      []byte(`{"amount":100}`),
		Topic:     "bank", Partition: 3, Offset: 17, Timestamp: recordTime,
	}, ev)

	// Only the required headers: the record supplies the rest.
	ev = decode(t, d, keyed(record(" [1, 2] \n", "ce_id", "e-2", "ce_type", "T"), "acc-1"))
	require.Equal(t, Event{
		ID: "e-2", Type: "T", AggregateID: "acc-1", CreatedAt: recordTime, Data: []byte(`[1, 2]`),
		Topic: "bank", Partition: 3, Offset: 17, Timestamp: recordTime,
	}, ev)
}

func TestCloudEventsBinaryData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, contentType, value, want string
	}{
		{"no content type, JSON", "", `{"a":1}`, `{"a":1}`},
		{"empty value is null", "", ``, `null`},
		{"white space is null", "application/json", " \n", `null`},
		{"application/json", "application/json", `"s"`, `"s"`},
		{"upper case", "Application/JSON", `1`, `1`},
		{"text/json", "text/json", `true`, `true`},
		{"+json suffix with parameters", "application/vnd.bank.v1+json; charset=utf-8", `{"x":[]}`, `{"x":[]}`},
		{"text/plain becomes a JSON string", "text/plain; charset=utf-8", "line 1\n\"quoted\"\t\\ \x01 é", `"line 1\n\"quoted\"\t\\ \u0001 é"`},
		{"text with invalid UTF-8", "text/csv", "a\xffb", `"a\ufffdb"`},
		{"empty text", "text/plain", "", `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDecoder(t, Source{Format: FormatCloudEvents})
			h := []string{"ce_specversion", "1.0", "ce_id", "1", "ce_type", "T", "ce_subject", "s"}
			if tt.contentType != "" {
				h = append(h, "content-type", tt.contentType)
			}
			ev := decode(t, d, record(tt.value, h...))
			require.Equal(t, tt.want, string(ev.Data))
			require.True(t, json.Valid(ev.Data))
		})
	}
}

func TestCloudEventsStructured(t *testing.T) {
	t.Parallel()
	d := newDecoder(t, Source{Format: FormatCloudEvents})
	ev := decode(t, d, record(`{
		"specversion": "1.0", "id": "e-1", "source": "/bank", "type": "MoneyDeposited",
		"time": "2024-01-02T03:04:05Z", "subject": "acc-7", "sequence": "12",
		"datacontenttype": "application/json", "data": {"amount": 100}
	}`, "content-type", "application/cloudevents+json; charset=UTF-8"))
	require.Equal(t, Event{
		ID: "e-1", Type: "MoneyDeposited", AggregateID: "acc-7", Version: 12,
		CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		Data:      []byte(`{"amount": 100}`),
		Topic:     "bank", Partition: 3, Offset: 17, Timestamp: recordTime,
	}, ev)

	// Integer sequence, data_base64, record key and timestamp.
	ev = decode(t, d, keyed(record(`{"id":"e-2","type":"T","sequence":7,"data_base64":"aGVsbG8="}`,
		"content-type", "application/cloudevents+json"), "acc-1"))
	require.Equal(t, Event{
		ID: "e-2", Type: "T", AggregateID: "acc-1", Version: 7, CreatedAt: recordTime,
		Data:  []byte(`"aGVsbG8="`),
		Topic: "bank", Partition: 3, Offset: 17, Timestamp: recordTime,
	}, ev)

	// Structured mode wins over ce_ headers.
	ev = decode(t, d, keyed(record(`{"id":"e-3","type":"FromValue"}`,
		"ce_type", "FromHeader", "ce_id", "h", "content-type", "application/cloudevents+json"), "k"))
	require.Equal(t, "FromValue", ev.Type)
	require.Equal(t, "null", string(ev.Data))
}

func TestCloudEventsErrors(t *testing.T) {
	t.Parallel()
	const structured = "application/cloudevents+json"
	tests := []struct {
		name   string
		r      *Record
		field  string
		reason string
	}{
		{"no mode", record(`{"id":"1","type":"T"}`), "", "not a CloudEvent: binary mode needs the headers ce_specversion, ce_id and ce_type; structured mode needs the header content-type: application/cloudevents+json"},
		{"plain JSON content type", record(`{}`, "content-type", "application/json"), "", "not a CloudEvent"},
		{"batch", record(`[]`, "content-type", "application/cloudevents-batch+json"), "content-type", "batched mode (application/cloudevents-batch+json) is not supported"},
		{"structured avro", record(``, "content-type", "application/cloudevents+avro"), "content-type", "structured mode in format application/cloudevents+avro is not supported"},
		{"binary without id", keyed(record(`1`, "ce_specversion", "1.0", "ce_type", "T"), "k"), "ce_id", "missing or empty; every CloudEvent needs an id"},
		{"binary with empty id", keyed(record(`1`, "ce_type", "T", "ce_id", ""), "k"), "ce_id", "missing or empty"},
		{"binary without type", keyed(record(`1`, "ce_specversion", "1.0", "ce_id", "1"), "k"), "ce_type", "missing or empty; every CloudEvent needs a type"},
		{"binary without subject or key", record(`1`, "ce_id", "1", "ce_type", "T"), "ce_subject", "missing, and the record has no key to fall back on; set ce_subject, or key the records by aggregate"},
		{"binary bad time", keyed(record(`1`, "ce_id", "1", "ce_type", "T", "ce_time", "now"), "k"), "ce_time", `want an RFC 3339 time such as "2006-01-02T15:04:05.999999999Z", got "now"`},
		{"binary bad sequence", keyed(record(`1`, "ce_id", "1", "ce_type", "T", "ce_sequence", "1.0"), "k"), "ce_sequence", `want an integer, got "1.0"`},
		{"binary invalid JSON", keyed(record(`{"a":`, "ce_id", "1", "ce_type", "T"), "k"), "value", "content type absent, so JSON: invalid JSON at byte 5: want a value, got the end of the input"},
		{"binary trailing garbage", keyed(record(`1 2`, "ce_id", "1", "ce_type", "T", "content-type", "application/json"), "k"), "value", `content type application/json: invalid JSON at byte 2: unexpected "2" after the JSON value`},
		{"binary binary data", keyed(record("\x00\x01", "ce_id", "1", "ce_type", "T", "content-type", "application/octet-stream"), "k"), "content-type", `unsupported content type "application/octet-stream"; kreplay reads JSON (application/json, text/json, */*+json) and text/* data`},
		{"structured not an object", record(`[]`, "content-type", structured), "", "want a JSON object"},
		{"structured without id", keyed(record(`{"type":"T"}`, "content-type", structured), "k"), "id", "missing or empty; every CloudEvent needs an id"},
		{"structured with empty id", keyed(record(`{"type":"T","id":""}`, "content-type", structured), "k"), "id", "missing or empty"},
		{"structured without type", keyed(record(`{"id":"1"}`, "content-type", structured), "k"), "type", "missing; every event needs a type"},
		{"structured without subject or key", record(`{"id":"1","type":"T"}`, "content-type", structured), "subject", "missing, and the record has no key"},
		{"structured bad time", keyed(record(`{"id":"1","type":"T","time":5}`, "content-type", structured), "k"), "time", "want an RFC 3339 string, got 5"},
		{"structured bad sequence", keyed(record(`{"id":"1","type":"T","sequence":"x"}`, "content-type", structured), "k"), "sequence", `want an integer, got "x"`},
		{"structured data and data_base64", keyed(record(`{"id":"1","type":"T","data":1,"data_base64":"AA=="}`, "content-type", structured), "k"), "data_base64", "set together with data"},
		{"structured data_base64 not a string", keyed(record(`{"id":"1","type":"T","data_base64":1}`, "content-type", structured), "k"), "data_base64", "want a base64 string, got 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDecoder(t, Source{Format: FormatCloudEvents})
			var ev Event
			err := d.Decode(tt.r, &ev)
			var de *DecodeError
			require.True(t, errors.As(err, &de), "want a *DecodeError, got %v", err)
			require.Equal(t, tt.field, de.Field)
			require.Contains(t, de.Reason, tt.reason)
		})
	}
}

func TestScannerMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		``, ` `, `null`, `nul`, `1`, `-`, `-0`, `-01`, `1.5e+10`, `1E5`, `.5`, `"a"`, `"\u00e9"`, `"\uD800"`, `"a` + "\x7f" + `"`,
		`[]`, `[,]`, `[1,]`, `{}`, `{"a":1,}`, `{"a" 1}`, `{1:1}`, `[[[]]]`, `[[]`, `{"a":{"b":[{}]}}`, "\"\xff\"", `"\/"`, `"\a"`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
	} {
		var s scanner
		err := s.validJSON([]byte(in))
		require.Equal(t, json.Valid([]byte(in)), err == nil, "input %.40q: %v", in, err)
	}
}

// benchEvent is a typical event: escape-free envelope strings, a small
// payload.
const benchEvent = `{"id":"7f9c2ba4-e88f-11ee-9c38-0242ac120002","type":"MoneyDeposited","aggregate_id":"acc-000123","version":42,` +
	`"created_at":"2024-03-21T10:15:30.123456Z","data":{"amount":12500,"currency":"EUR","reference":"salary march","tags":["payroll","monthly"]}}`

func BenchmarkJSONDecode(b *testing.B) {
	d := newDecoder(b, Source{})
	r := record(benchEvent)
	var ev Event
	b.SetBytes(int64(len(r.Value)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(r, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJSONDecodeEncodingJSON decodes the same event with encoding/json
// into a struct, for comparison.
func BenchmarkJSONDecodeEncodingJSON(b *testing.B) {
	type envelope struct {
		ID          string          `json:"id"`
		Type        string          `json:"type"`
		AggregateID string          `json:"aggregate_id"`
		Version     int64           `json:"version"`
		CreatedAt   time.Time       `json:"created_at"`
		Data        json.RawMessage `json:"data"`
	}
	value := []byte(benchEvent)
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		var e envelope
		if err := json.Unmarshal(value, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONDecodeLargePayload(b *testing.B) {
	d := newDecoder(b, Source{})
	payload := strings.Repeat(`{"sku":"ABC-123","qty":2,"price":19.99,"note":"gift wrap \"please\""},`, 200)
	r := record(`{"id":"1","type":"OrderPlaced","aggregate_id":"o-1","data":{"lines":[` + payload + `{}]}}`)
	var ev Event
	b.SetBytes(int64(len(r.Value)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(r, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCloudEventsBinaryDecode(b *testing.B) {
	d := newDecoder(b, Source{Format: FormatCloudEvents})
	r := record(`{"amount":12500,"currency":"EUR","reference":"salary march"}`,
		"ce_specversion", "1.0", "ce_id", "7f9c2ba4-e88f-11ee-9c38-0242ac120002", "ce_type", "MoneyDeposited",
		"ce_source", "/bank", "ce_time", "2024-03-21T10:15:30.123456Z", "ce_subject", "acc-000123",
		"ce_sequence", "42", "content-type", "application/json")
	var ev Event
	b.SetBytes(int64(len(r.Value)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(r, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
