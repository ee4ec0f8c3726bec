package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/store/storetest"
)

func TestMigrate(t *testing.T) {
	clearEnv(t) // no kreplay.yaml: the URL comes from the flag alone
	dbURL := storetest.NewDatabase(t)
	ctx := context.Background()

	stdout, _, err := execute(ctx, "migrate", "--database-url", dbURL, "--log-level", "warn")
	require.NoError(t, err)
	require.Regexp(t, `^catalog migrated: applied \d+(, \d+)*\n$`, stdout)

	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM kreplay.schema_migrations").Scan(&n))
	require.Positive(t, n)

	stdout, _, err = execute(ctx, "migrate", "--database-url", dbURL)
	require.NoError(t, err)
	require.Equal(t, "catalog is up to date\n", stdout, "migrate is idempotent")
	stdout, _, err = execute(ctx, "migrate", "--database-url", dbURL, "-o", "json")
	require.NoError(t, err)
	require.JSONEq(t, `{"applied": []}`, stdout)
}

// Without a serve, clients fail with a message that says so instead of hanging.
func TestClientsWithoutServe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A client's config file: just kafka:, no projections.
	clientConfig := writeFile(t, filepath.Join(t.TempDir(), "client.yaml"), "kafka:\n  client_id: ops\n")
	bare := kafkatest.New(t, map[string]int32{"bank.accounts": 1})
	brokers := bare.Addrs[0]

	_, _, err := execute(ctx, "status", "--brokers", brokers, "-c", clientConfig, "--timeout", "2s")
	require.ErrorContains(t, err, "topic kreplay.control does not exist on "+brokers+": kreplay serve creates it at start")

	// The topics exist (a serve ran once) but nothing answers.
	k := kafkatest.New(t, map[string]int32{"kreplay.control": 1, "kreplay.status": 1})
	brokers = k.Addrs[0]
	_, _, err = execute(ctx, "start", "stock_v2", "--brokers", brokers, "-c", clientConfig, "--timeout", "1s")
	require.ErrorContains(t, err, "no answer from kreplay serve: command ")
	require.ErrorContains(t, err, "(start stock_v2) was not started before its deadline ")
	require.ErrorContains(t, err, `so it will not run (a serve that reads it later answers "expired"); is kreplay serve running against `+brokers+"?")
	noStatus := "no status on kreplay.status within 1s: is kreplay serve running against " + brokers + "?"
	_, _, err = execute(ctx, "status", "--brokers", brokers, "-c", clientConfig, "--timeout", "1s")
	require.ErrorContains(t, err, noStatus)
	_, _, err = execute(ctx, "status", "stock_v2", "--watch", "--brokers", brokers, "-c", clientConfig, "--timeout", "1s")
	require.EqualError(t, err, noStatus)
	_, _, err = execute(ctx, "lag", "stock_v2", "--brokers", brokers, "-c", clientConfig, "--timeout", "1s")
	require.ErrorContains(t, err, noStatus)
}
