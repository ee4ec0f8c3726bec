package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// The fuzz targets check properties rather than outputs. Their seeds, the
// realistic and the hostile, are the files of testdata/fuzz/<target>, which
// go test also runs as regression tests. Fuzz one with, for example:
//
//	go test -run='^$' -fuzz=FuzzJSONDecoder -fuzztime=30s ./topology/

// isObject reports whether b, valid JSON, is an object.
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// checkDecoded holds for any record any decoder accepts or refuses.
func checkDecoded(t *testing.T, ev *Event, err error) {
	t.Helper()
	if err != nil {
		var de *DecodeError
		require.True(t, errors.As(err, &de), "want a *DecodeError, got %T: %v", err, err)
		require.NotEmpty(t, de.Reason)
		return
	}
	require.NotEmpty(t, ev.Type)
	require.True(t, json.Valid(ev.Data), "Data %q is not valid JSON", ev.Data)
}

func FuzzJSONDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, value, key []byte) {
		d, err := NewDecoder(Source{Topic: "t"})
		require.NoError(t, err)
		r := &Record{Topic: "t", Partition: 1, Offset: 2, Key: key, Value: value}
		var ev Event
		err = d.Decode(r, &ev)
		checkDecoded(t, &ev, err)

		// Decoding again with the same decoder gives the same result: no
		// state leaks from one record to the next.
		var again Event
		require.Equal(t, err, d.Decode(r, &again))
		require.Equal(t, ev, again)

		valid := json.Valid(value)
		if err == nil {
			require.True(t, valid, "accepted invalid JSON")
			require.True(t, isObject(value))
			require.NotEmpty(t, ev.ID)
		}
		if valid && isObject(value) && err != nil {
			// Valid JSON is never refused as a syntax error.
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.NotEmpty(t, de.Field, "valid JSON refused: %v", err)
		}

		// On valid UTF-8, agree with encoding/json on what the members hold.
		var ref map[string]json.RawMessage
		if err != nil || !utf8.Valid(value) || json.Unmarshal(value, &ref) != nil {
			return
		}
		var typ string
		require.NoError(t, json.Unmarshal(ref["type"], &typ))
		require.Equal(t, typ, ev.Type)
		if raw, ok := ref["data"]; ok {
			require.Equal(t, string(raw), string(ev.Data))
		} else {
			require.Equal(t, "null", string(ev.Data))
		}
		if raw, ok := ref["aggregate_id"]; ok && raw[0] == '"' {
			var agg string
			require.NoError(t, json.Unmarshal(raw, &agg))
			require.Equal(t, agg, ev.AggregateID)
		}
		if raw, ok := ref["version"]; ok && raw[0] != 'n' && raw[0] != '"' {
			v, perr := strconv.ParseInt(string(raw), 10, 64)
			require.NoError(t, perr)
			require.Equal(t, v, ev.Version)
		}
	})
}

func FuzzCloudEventsStructured(f *testing.F) {
	f.Fuzz(func(t *testing.T, value []byte) {
		d, err := NewDecoder(Source{Topic: "t", Format: FormatCloudEvents})
		require.NoError(t, err)
		r := &Record{Topic: "t", Key: []byte("k"), Value: value,
			Headers: []Header{{Key: "content-type", Value: []byte("application/cloudevents+json")}}}
		var ev Event
		err = d.Decode(r, &ev)
		checkDecoded(t, &ev, err)
		if err == nil {
			require.True(t, json.Valid(value), "accepted invalid JSON")
			require.NotEmpty(t, ev.ID)
		}
		if json.Valid(value) && isObject(value) && err != nil {
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.NotEmpty(t, de.Field, "valid JSON refused: %v", err)
		}
	})
}

func FuzzCloudEventsBinary(f *testing.F) {
	f.Fuzz(func(t *testing.T, value []byte, contentType, tm, seq string) {
		d, err := NewDecoder(Source{Topic: "t", Format: FormatCloudEvents})
		require.NoError(t, err)
		r := &Record{Topic: "t", Key: []byte("k"), Value: value, Headers: []Header{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte("1")},
			{Key: "ce_type", Value: []byte("T")},
		}}
		for _, h := range [][2]string{{"content-type", contentType}, {"ce_time", tm}, {"ce_sequence", seq}} {
			if h[1] != "" {
				r.Headers = append(r.Headers, Header{Key: h[0], Value: []byte(h[1])})
			}
		}
		var ev Event
		err = d.Decode(r, &ev)
		checkDecoded(t, &ev, err)
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1024 {
			// Real config files are small, and the fuzzer's minimizer is
			// quadratic in the input: long inputs would stall it.
			return
		}
		c, err := Parse(data)
		if err != nil {
			require.Nil(t, c)
			return
		}
		c.SetDefaults()
		if c.Validate() != nil {
			return
		}
		// A valid config gives valid definitions with stable hashes and
		// parsable handlers.
		for _, p := range c.Projections {
			d, err := c.Definition(p.Name)
			require.NoError(t, err)
			require.NoError(t, d.Validate())
			b, err := json.Marshal(d)
			require.NoError(t, err)
			var back Definition
			require.NoError(t, json.Unmarshal(b, &back))
			require.Equal(t, d, back)
			require.Equal(t, d.Hash(), back.Hash())
			hs, err := d.ParseHandlers()
			require.NoError(t, err)
			require.Len(t, hs, len(d.Handlers))
		}
	})
}

var namedArgRE = regexp.MustCompile(`@[A-Za-z_][A-Za-z0-9_]*`)

func FuzzParseHandler(f *testing.F) {
	f.Fuzz(func(t *testing.T, sql string) {
		h, err := ParseHandler("E", sql)
		if err != nil {
			require.Contains(t, err.Error(), `handler "E": `)
			return
		}
		require.Equal(t, sql, h.SQL)

		// Every recognised argument was replaced, and nothing else was: the
		// @names left are those the original had outside argument position.
		recognised := 0
		require.NoError(t, lexSQL(sql, func(tok sqlToken) error {
			if tok.kind == tokNamed {
				recognised++
			}
			return nil
		}))
		require.Equal(t, len(namedArgRE.FindAllString(sql, -1))-recognised, len(namedArgRE.FindAllString(h.Positional, -1)))

		// The parameters are $1..$len(Args), each argument once.
		seen := map[Arg]bool{}
		for _, a := range h.Args {
			require.False(t, seen[a], "argument %s twice", a)
			seen[a] = true
		}
		for i := range h.Args {
			require.Contains(t, h.Positional, "$"+strconv.Itoa(i+1))
		}
		if len(h.Args) == 0 {
			require.Equal(t, sql, h.Positional)
		}
	})
}
