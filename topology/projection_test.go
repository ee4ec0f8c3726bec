package topology

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefinition(t *testing.T) {
	t.Parallel()
	c, err := Load("testdata/full.yaml", env(nil))
	require.NoError(t, err)
	d, err := c.Definition("balances")
	require.NoError(t, err)
	require.Equal(t, Definition{
		Projection: "balances",
		Ordering:   OrderingPartition,
		OnError:    OnErrorDeadLetter,
		Sources: []Source{
			{Topic: "bank.accounts", Format: FormatJSON, Fields: FieldNames{
				ID: "eventId", Type: "eventType", AggregateID: "accountId", Version: "seq", CreatedAt: "occurredAt", Data: "payload",
			}},
			{Topic: "bank.transfers", Format: FormatCloudEvents},
		},
		Tables: []string{
			"CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL)",
			"CREATE INDEX balances_total ON balances (total)",
		},
		Handlers: map[string]string{
			"MoneyDeposited": "INSERT INTO balances (account_id, total) VALUES (@aggregate_id, (@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = balances.total + EXCLUDED.total",
			"TransferSent":   "UPDATE balances SET total = total - (@data->>'amount')::bigint WHERE account_id = @aggregate_id",
		},
		Checks: []string{"SELECT count(*) FROM balances"},
	}, d)
	require.NoError(t, d.Validate())
	require.Equal(t, []string{"bank.accounts", "bank.transfers"}, d.Topics())

	s, ok := d.Source("bank.transfers")
	require.True(t, ok)
	require.Equal(t, FormatCloudEvents, s.Format)
	_, ok = d.Source("nope")
	require.False(t, ok)

	hs, err := d.ParseHandlers()
	require.NoError(t, err)
	require.Len(t, hs, 2)
	require.Equal(t, []Arg{ArgAggregateID, ArgData}, hs["MoneyDeposited"].Args)
	require.Equal(t, "UPDATE balances SET total = total - (($1::jsonb)->>'amount')::bigint WHERE account_id = $2", hs["TransferSent"].Positional)

	_, err = c.Definition("nope")
	require.EqualError(t, err, `projection "nope" is not declared (declared: balances)`)
}

func TestDefinitionJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"testdata/kreplay.yaml", "testdata/full.yaml"} {
		c, err := Load(path, env(nil))
		require.NoError(t, err)
		for _, p := range c.Projections {
			d, err := c.Definition(p.Name)
			require.NoError(t, err)
			b, err := json.Marshal(d)
			require.NoError(t, err)
			var back Definition
			require.NoError(t, json.Unmarshal(b, &back))
			require.Equal(t, d, back, "a definition read back from the catalog equals the original")
			require.Equal(t, d.Hash(), back.Hash())
			require.NoError(t, back.Validate())
		}
	}
}

func TestDefinitionDoesNotAliasConfig(t *testing.T) {
	t.Parallel()
	c := validConfig()
	d, err := c.Definition("balances")
	require.NoError(t, err)
	d.Tables[0] = "changed"
	d.Handlers["MoneyDeposited"] = "changed"
	d.Sources[0].Topic = "changed"
	require.NoError(t, c.Validate())
	again, err := c.Definition("balances")
	require.NoError(t, err)
	require.NotEqual(t, d.Hash(), again.Hash())
}

func TestDefinitionAppliesDefaults(t *testing.T) {
	t.Parallel()
	// A config that has not been through SetDefaults gives the same
	// definition as one that has.
	raw, err := Parse([]byte(`
sources: [{topic: a}]
projections:
  - name: p
    sources: [a]
    tables: ["CREATE TABLE t (id text, n int)"]
    handlers: {E: "SELECT 1"}
`))
	require.NoError(t, err)
	d1, err := raw.Definition("p")
	require.NoError(t, err)
	raw.SetDefaults()
	d2, err := raw.Definition("p")
	require.NoError(t, err)
	require.Equal(t, d2, d1)
	require.Equal(t, OrderingGlobal, d1.Ordering)
	require.Equal(t, defaultFieldNames, d1.Sources[0].Fields)

	raw.Projections[0].Sources = []string{"missing"}
	_, err = raw.Definition("p")
	require.EqualError(t, err, `projection "p": source "missing" is not declared; add it under sources:`)
}

// hashOf parses a config, defaults it and hashes its projection p.
func hashOf(t *testing.T, yaml string) string {
	t.Helper()
	c, err := Parse([]byte(yaml))
	require.NoError(t, err)
	c.SetDefaults()
	require.NoError(t, c.Validate())
	d, err := c.Definition("p")
	require.NoError(t, err)
	return d.Hash()
}

func TestDefinitionHash(t *testing.T) {
	t.Parallel()
	const base = `
sources: [{topic: a}, {topic: b}]
projections:
  - name: p
    sources: [a, b]
    tables:
      - CREATE TABLE t (id text PRIMARY KEY, n bigint)
    handlers:
      Created: INSERT INTO t (id, n) VALUES (@aggregate_id, 0)
      Bumped: UPDATE t SET n = n + 1 WHERE id = @aggregate_id
      Removed: DELETE FROM t WHERE id = @aggregate_id
    checks: [SELECT count(*) FROM t]
`
	h := hashOf(t, base)
	require.Regexp(t, `^sha256:[0-9a-f]{64}$`, h)

	// Stable: the same config hashes the same every time (map iteration
	// order varies between runs of the loop).
	for range 20 {
		require.Equal(t, h, hashOf(t, base))
	}

	unchanged := map[string]string{
		"handlers in another order": strings.Replace(strings.Replace(base,
			"      Created: INSERT INTO t (id, n) VALUES (@aggregate_id, 0)\n", "", 1),
			"      Removed:", "      Created: INSERT INTO t (id, n) VALUES (@aggregate_id, 0)\n      Removed:", 1),
		"operational knobs":        base + "    idle_timeout: 5s\n    batch_size: 10\n    workers: 2\n    allow_truncated_history: true\n",
		"explicit defaults":        base + "    ordering: global\n    on_error: fail\n",
		"explicit field names":     strings.Replace(base, "{topic: a}", "{topic: a, format: json, fields: {type: type, data: data}}", 1),
		"partitions":               strings.Replace(base, "{topic: a}", "{topic: a, partitions: 64}", 1),
		"surrounding white space":  strings.Replace(base, "      - CREATE TABLE t (id text PRIMARY KEY, n bigint)\n", "      - |\n\n        CREATE TABLE t (id text PRIMARY KEY, n bigint)\n\n", 1),
		"other kafka and postgres": base + "kafka: {client_id: other}\npostgres: {live_schema: views}\n",
		"no reads":                 base + "    reads: []\n",
	}
	for name, yaml := range unchanged {
		require.Equal(t, h, hashOf(t, yaml), name)
	}

	changed := map[string]string{
		"a handler":        strings.Replace(base, "n = n + 1", "n = n + 2", 1),
		"a new handler":    strings.Replace(base, "    handlers:\n", "    handlers:\n      Renamed: UPDATE t SET id = @aggregate_id\n", 1),
		"a table":          strings.Replace(base, "n bigint", "n integer", 1),
		"a check":          strings.Replace(base, "count(*)", "sum(n)", 1),
		"no checks":        strings.Replace(base, "    checks: [SELECT count(*) FROM t]\n", "", 1),
		"ordering":         base + "    ordering: partition\n",
		"on_error":         base + "    on_error: skip\n",
		"source order":     strings.Replace(base, "sources: [a, b]", "sources: [b, a]", 1),
		"a source less":    strings.Replace(base, "sources: [a, b]", "sources: [a]", 1),
		"a source format":  strings.Replace(base, "{topic: b}", "{topic: b, format: cloudevents}", 1),
		"a source's field": strings.Replace(base, "{topic: a}", "{topic: a, fields: {created_at: ts}}", 1),
		"a read lookup":    base + "    reads: [public.currencies]\n",
	}
	for name, yaml := range changed {
		require.NotEqual(t, h, hashOf(t, yaml), name)
	}
}

func TestDefinitionHashNilEqualsEmpty(t *testing.T) {
	t.Parallel()
	d := Definition{Projection: "p", Ordering: OrderingGlobal, OnError: OnErrorFail}
	e := d
	e.Sources, e.Tables, e.Handlers, e.Checks = []Source{}, []string{}, map[string]string{}, []string{}
	require.Equal(t, d.Hash(), e.Hash())
}

func TestDefinitionValidate(t *testing.T) {
	t.Parallel()
	valid := func() Definition {
		d, err := validConfig().Definition("balances")
		if err != nil {
			panic(err)
		}
		return d
	}
	require.NoError(t, valid().Validate())

	tests := []struct {
		name   string
		mutate func(d *Definition)
		want   string
	}{
		{"name", func(d *Definition) { d.Projection = "Bad" }, `projection "Bad": invalid name "Bad"`},
		{"no sources", func(d *Definition) { d.Sources = nil }, `projection "balances": sources: none`},
		{"source twice", func(d *Definition) { d.Sources = append(d.Sources, d.Sources[0]) }, `projection "balances": source "bank.accounts" is listed twice`},
		{"source topic", func(d *Definition) { d.Sources[0].Topic = "a b" }, `projection "balances": sources[0]: invalid topic name "a b"`},
		{"source format", func(d *Definition) { d.Sources[0].Format = "" }, `projection "balances": sources[0]: unknown format ""`},
		{"source fields", func(d *Definition) { d.Sources[0].Fields.Data = "" }, `projection "balances": sources[0]: fields.data is blank`},
		{"ordering", func(d *Definition) { d.Ordering = "" }, `projection "balances": unknown ordering "" (valid: global, partition)`},
		{"on_error", func(d *Definition) { d.OnError = "x" }, `projection "balances": unknown on_error "x"`},
		{"tables", func(d *Definition) { d.Tables = nil }, `projection "balances": tables: none`},
		{"handlers", func(d *Definition) { d.Handlers = nil }, `projection "balances": handlers: none`},
		{"handler", func(d *Definition) { d.Handlers["X"] = "SELECT $1" }, `projection "balances": handler "X": positional parameter $1`},
		{"check", func(d *Definition) { d.Checks = []string{" "} }, `projection "balances": checks[0] is blank`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := valid()
			tt.mutate(&d)
			require.ErrorContains(t, d.Validate(), tt.want)
		})
	}

	d := valid()
	d.Handlers["X"] = "SELECT @nope"
	_, err := d.ParseHandlers()
	require.ErrorContains(t, err, `projection "balances": handler "X": unknown argument @nope`)
}

// hostileNames are refused by every name check, each for its own reason.
var hostileNames = []struct {
	name, value, want string
}{
	{"empty", "", "is empty"},
	{"upper case", "Balances", `"Balances"`},
	{"double quote", `a"b`, `"a\"b"`},
	{"single quote", `a'b`, `"a'b"`},
	{"semicolon injection", `x; DROP TABLE y`, `"x; DROP TABLE y"`},
	{"NUL byte", "a\x00b", `"a\x00b"`},
	{"newline", "a\nb", `"a\nb"`},
	{"space", "a b", `"a b"`},
	{"dash", "a-b", `"a-b"`},
	{"dot", "a.b", `"a.b"`},
	{"non-ASCII", "café", `"café"`},
	{"too long", strings.Repeat("a", 64), "64 bytes is too long"},
	{"way too long", strings.Repeat("x", 1000), "1000 bytes is too long"},
	{"pg prefix", "pg_x", `"pg_x": names starting with "pg_" are reserved by PostgreSQL`},
	{"reserved word", "select", `"select": a reserved SQL keyword`},
	{"reserved word user", "user", `"user": a reserved SQL keyword`},
	{"reserved word current_user", "current_user", `"current_user": a reserved SQL keyword`},
}

func TestValidateIdentifier(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"public", "read_models", "_private", "a", "x1", strings.Repeat("a", 63), "kreplay", "users", "selected"} {
		require.NoError(t, ValidateIdentifier(s), s)
	}
	for _, tt := range hostileNames {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateIdentifier(tt.value)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
	require.ErrorContains(t, ValidateIdentifier("1abc"), `invalid identifier "1abc": an identifier is 1-63 characters from a-z, 0-9 and _, not starting with a digit`)
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"balances_v1", "b", "balances_v2_fix", strings.Repeat("a", 48), "users"} {
		require.NoError(t, ValidateKey(s), s)
	}
	for _, tt := range hostileNames {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateKey(tt.value)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
	tests := []struct{ key, want string }{
		{strings.Repeat("a", 49), `invalid replay key "` + strings.Repeat("a", 49) + `": 49 bytes is too long; a replay key is 1-48 characters from a-z, 0-9 and _, starting with a letter`},
		{"_v1", `invalid replay key "_v1": a replay key is 1-48 characters`},
		{"1v", `invalid replay key "1v"`},
		{"public", `invalid replay key "public": the schema public already exists with another purpose`},
		{"kreplay", `invalid replay key "kreplay": the schema kreplay already exists`},
		{"information_schema", `invalid replay key "information_schema"`},
	}
	for _, tt := range tests {
		require.ErrorContains(t, ValidateKey(tt.key), tt.want)
	}
}

func TestProjectionNameMakesValidKey(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"a", "balances", strings.Repeat("b", 45), "select", "user", "public", "kreplay"} {
		require.NoError(t, validateProjectionName(name), name)
		require.NoError(t, ValidateKey(name+"_v1"), name)
	}
	require.Error(t, validateProjectionName(strings.Repeat("b", 46)))
	require.Error(t, validateProjectionName("pg_stat"))
	require.Error(t, validateProjectionName("_x"))
}

func TestEnumUnmarshalYAML(t *testing.T) {
	t.Parallel()
	var p Projection
	c, err := Parse([]byte("projections: [{ordering: partition, on_error: dead_letter}]\nsources: [{format: cloudevents}]\n"))
	require.NoError(t, err)
	p = c.Projections[0]
	require.Equal(t, OrderingPartition, p.Ordering)
	require.Equal(t, OnErrorDeadLetter, p.OnError)
	require.Equal(t, FormatCloudEvents, c.Sources[0].Format)
}
