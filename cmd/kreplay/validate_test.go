package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store/storetest"
)

const validateYAML = `sources:
  - topic: bank
projections:
  - name: balances
    sources: [bank]
    tables:
      - CREATE TABLE balances (id text PRIMARY KEY, total bigint NOT NULL)
    handlers:
      Deposited: INSERT INTO balances (id, total) VALUES (@aggregate_id, (@data->>'amount')::bigint)
        ON CONFLICT (id) DO UPDATE SET total = balances.total + EXCLUDED.total
`

// kreplay validate checks a config for CI: offline (shape and values), and with --database-url
// against PostgreSQL as serve does, naming every problem, and writing nothing.
func TestValidateChecksAConfigOfflineAndAgainstPostgres(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	good := writeFile(t, filepath.Join(dir, "good.yaml"), validateYAML)
	out, _, err := execute(ctx, "validate", "-c", good, "-o", "json")
	require.NoError(t, err)
	var res struct {
		OK          bool `json:"ok"`
		Postgres    bool `json:"checked_against_postgres"`
		Projections []struct {
			Name string `json:"name"`
			Hash string `json:"definition_hash"`
		} `json:"projections"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.True(t, res.OK)
	require.False(t, res.Postgres, "offline unless --database-url")
	require.Len(t, res.Projections, 1)
	require.Equal(t, "balances", res.Projections[0].Name)
	require.True(t, strings.HasPrefix(res.Projections[0].Hash, "sha256:"))

	typo := writeFile(t, filepath.Join(dir, "typo.yaml"), strings.Replace(validateYAML, "handlers:", "handler:", 1))
	_, _, err = execute(ctx, "validate", "-c", typo)
	require.ErrorContains(t, err, `unknown key "handler"`)
	require.ErrorContains(t, err, "line 8")

	// A handler naming a table its projection does not have passes offline, and is refused
	// against PostgreSQL with the projection, the event type and PostgreSQL's message.
	db := storetest.NewDatabase(t)
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), validateYAML+"      Named: INSERT INTO nowhere VALUES (@aggregate_id)\n")
	_, _, err = execute(ctx, "validate", "-c", bad)
	require.NoError(t, err)
	_, _, err = execute(ctx, "validate", "-c", bad, "--database-url", db)
	require.ErrorContains(t, err, `projection "balances": handler "Named": relation "nowhere" does not exist`)
	out, _, err = execute(ctx, "validate", "-c", good, "--database-url", db)
	require.NoError(t, err)
	require.Contains(t, out, "prepared against PostgreSQL")
	conn := storetest.Conn(t, db)
	var schemas int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'kreplay%'").Scan(&schemas))
	require.Zero(t, schemas, "validate writes nothing, not even the catalog")
}
