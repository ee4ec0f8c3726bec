package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// checkBody drops what follows a check's last token, and only that: comment markers and
// semicolons inside strings, quoted identifiers and dollar quotes are text.
func TestCheckBody(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT 1;", "SELECT 1"},
		{"  SELECT 1 ; ;\n\t", "  SELECT 1"},
		{"SELECT 1 -- rows", "SELECT 1"},
		{"SELECT 1; -- rows", "SELECT 1"},
		{"SELECT 1 -- rows\n;\n", "SELECT 1"},
		{"SELECT 1 /* a /* nested */ comment */ ;", "SELECT 1"},
		{"SELECT 1 -- one\n-- two", "SELECT 1"},
		{"SELECT 1 -- one\n, 2 -- two", "SELECT 1 -- one\n, 2"},
		{"SELECT '-- not a comment;'", "SELECT '-- not a comment;'"},
		{"SELECT 'it''s -- text' -- comment", "SELECT 'it''s -- text'"},
		{`SELECT E'\' -- text' -- comment`, `SELECT E'\' -- text'`},
		{`SELECT 'a\' -- comment`, `SELECT 'a\'`},
		{`SELECT "a--b;" FROM t;`, `SELECT "a--b;" FROM t`},
		{"SELECT $$ -- ; $$ -- comment", "SELECT $$ -- ; $$"},
		{"SELECT $x$ $$ -- $x$;", "SELECT $x$ $$ -- $x$"},
		{"SELECT a$b FROM t -- c", "SELECT a$b FROM t"},
		{"SELECT 2-1 --", "SELECT 2-1"},
		{"-- only a comment", ""},
	} {
		require.Equal(t, tc.want, checkBody(tc.in), "%q", tc.in)
	}
}
