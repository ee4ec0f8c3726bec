package topology

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseHandlerDesignHandler(t *testing.T) {
	t.Parallel()
	sql := `INSERT INTO balances AS b (account_id, total, updated_at)
VALUES (@aggregate_id, (@data::jsonb->>'amount')::bigint, @created_at)
ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at
`
	h, err := ParseHandler("MoneyDeposited", sql)
	require.NoError(t, err)
	require.Equal(t, Handler{
		EventType: "MoneyDeposited",
		SQL:       sql,
		Positional: `INSERT INTO balances AS b (account_id, total, updated_at)
VALUES ($1, (($2::jsonb)::jsonb->>'amount')::bigint, $3)
ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at
`,
		Args: []Arg{ArgAggregateID, ArgData, ArgCreatedAt},
	}, h)
}

func TestParseHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sql      string
		want     string
		wantArgs []Arg
	}{
		{
			name:     "every argument",
			sql:      "SELECT @event_id, @type, @aggregate_id, @version, @created_at, @data, @topic, @partition, @offset",
			want:     "SELECT $1, $2, $3, $4, $5, ($6::jsonb), $7, $8, $9",
			wantArgs: Args,
		},
		{
			name:     "numbered by first appearance and reused",
			sql:      "UPDATE t SET v = @version, d = @data WHERE id = @aggregate_id AND v < @version AND d <> @data",
			want:     "UPDATE t SET v = $1, d = ($2::jsonb) WHERE id = $3 AND v < $1 AND d <> ($2::jsonb)",
			wantArgs: []Arg{ArgVersion, ArgData, ArgAggregateID},
		},
		{
			name: "no arguments",
			sql:  "DELETE FROM t",
			want: "DELETE FROM t",
		},
		{
			name:     "at the very start and end",
			sql:      "@data",
			want:     "($1::jsonb)",
			wantArgs: []Arg{ArgData},
		},
		{
			name:     "followed by punctuation",
			sql:      "SELECT f(@type,@topic)::text||@offset",
			want:     "SELECT f($1,$2)::text||$3",
			wantArgs: []Arg{ArgType, ArgTopic, ArgOffset},
		},
		{
			name:     "single-quoted strings",
			sql:      "SELECT '@type', 'it''s @data', @type",
			want:     "SELECT '@type', 'it''s @data', $1",
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "standard strings keep backslashes literal",
			sql:      `SELECT 'a\', @type`,
			want:     `SELECT 'a\', $1`,
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "escape strings",
			sql:      `SELECT E'it\'s @data', e'\\', @type`,
			want:     `SELECT E'it\'s @data', e'\\', $1`,
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "an identifier ending in e is no escape string",
			sql:      `SELECT type'\', @type`,
			want:     `SELECT type'\', $1`,
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "dollar-quoted strings",
			sql:      "SELECT $$ @data ' $$, $fn$ @type $$ $fn$, $a1$x$a1$, @version",
			want:     "SELECT $$ @data ' $$, $fn$ @type $$ $fn$, $a1$x$a1$, $1",
			wantArgs: []Arg{ArgVersion},
		},
		{
			name:     "quoted identifiers",
			sql:      `SELECT "@data", "a""@b", @type`,
			want:     `SELECT "@data", "a""@b", $1`,
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "line comments",
			sql:      "SELECT @type -- not @data\n, @version -- @offset",
			want:     "SELECT $1 -- not @data\n, $2 -- @offset",
			wantArgs: []Arg{ArgType, ArgVersion},
		},
		{
			name:     "nested block comments",
			sql:      "SELECT /* @data /* @offset */ @topic */ @type",
			want:     "SELECT /* @data /* @offset */ @topic */ $1",
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "jsonb operators",
			sql:      "SELECT @data @> '{}', '{}' <@ @data, x <@y, @data @? '$.a', @data @@ '$.a', x@@to_tsquery('a'), tags @>@data",
			want:     "SELECT ($1::jsonb) @> '{}', '{}' <@ ($1::jsonb), x <@y, ($1::jsonb) @? '$.a', ($1::jsonb) @@ '$.a', x@@to_tsquery('a'), tags @>($1::jsonb)",
			wantArgs: []Arg{ArgData},
		},
		{
			name: "the at sign inside words",
			sql:  "SELECT 'a' AS user@host, col@type FROM t",
			want: "SELECT 'a' AS user@host, col@type FROM t",
		},
		{
			name: "dollars inside identifiers",
			sql:  "SELECT a$1, b$$ FROM t",
			want: "SELECT a$1, b$$ FROM t",
		},
		{
			name:     "one trailing semicolon and comment",
			sql:      "DELETE FROM t WHERE id = @aggregate_id; -- done\n",
			want:     "DELETE FROM t WHERE id = $1; -- done\n",
			wantArgs: []Arg{ArgAggregateID},
		},
		{
			name:     "semicolons inside strings and comments",
			sql:      "SELECT ';', $$;$$ /* ; */, @type",
			want:     "SELECT ';', $$;$$ /* ; */, $1",
			wantArgs: []Arg{ArgType},
		},
		{
			name:     "non-ASCII text",
			sql:      "SELECT 'café', \"naïve\", @type -- ünïcode",
			want:     "SELECT 'café', \"naïve\", $1 -- ünïcode",
			wantArgs: []Arg{ArgType},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := ParseHandler("E", tt.sql)
			require.NoError(t, err)
			require.Equal(t, tt.want, h.Positional)
			require.Equal(t, tt.wantArgs, h.Args)
			require.Equal(t, tt.sql, h.SQL)
			require.Equal(t, "E", h.EventType)
		})
	}
}

func TestParseHandlerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, sql, want string
	}{
		{"empty", "", `handler "E": empty SQL; write the statement that applies the event`},
		{"blank", " \n\t", `handler "E": empty SQL`},
		{"only comments", "-- nothing\n/* here */", `handler "E": no statement, only comments`},
		{"unknown argument", "SELECT @amount", `handler "E": unknown argument @amount (valid: @event_id, @type, @aggregate_id, @version, @created_at, @data, @topic, @partition, @offset)`},
		{"unknown arguments listed once", "SELECT @a, @b, @a, @type", `handler "E": unknown arguments @a, @b (valid:`},
		{"names are case-sensitive", "SELECT @Data", `unknown argument @Data`},
		{"positional", "SELECT $1", `handler "E": positional parameter $1 at line 1 column 8; use @named arguments (@event_id,`},
		{"positional on a later line", "SELECT @type,\n  $12", `positional parameter $12 at line 2 column 3`},
		{"two statements", "DELETE FROM a; DELETE FROM b", `handler "E": more than one statement (a second one starts at line 1 column 16); one statement per handler`},
		{"two statements on two lines", "DELETE FROM a;\nDELETE FROM b;\n", `a second one starts at line 2 column 1`},
		{"empty second statement", "DELETE FROM a;;", `more than one statement`},
		{"unterminated string", "SELECT 'abc", `handler "E": unterminated string at line 1 column 8; close it with '`},
		{"unterminated escape string", `SELECT E'abc\'`, `unterminated string`},
		{"unterminated identifier", `SELECT "abc`, `unterminated quoted identifier`},
		{"unterminated dollar quote", "SELECT $x$ abc $y$", `unterminated dollar-quoted string at line 1 column 8; close it with $x$`},
		{"unterminated comment", "SELECT 1 /* a /* b */", `unterminated /* comment at line 1 column 10; close it with */`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseHandler("E", tt.sql)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestArgNames(t *testing.T) {
	t.Parallel()
	names := make([]string, len(Args))
	for i, a := range Args {
		names[i] = a.Name()
		require.Equal(t, Arg(i), a, "Args is in declaration order")
	}
	require.Equal(t, []string{"event_id", "type", "aggregate_id", "version", "created_at", "data", "topic", "partition", "offset"}, names)
	require.Equal(t, "@created_at", ArgCreatedAt.String())
	require.Equal(t, "Arg(42)", Arg(42).Name())
}
