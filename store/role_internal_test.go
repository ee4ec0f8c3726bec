package store

import (
	"context"
	"encoding/base64"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// The SCRAM-SHA-256 verifier kreplay sends in CREATE ROLE ... PASSWORD (so that the password
// itself never reaches the server's statements or log) is the one PostgreSQL computes itself for
// that password, salt and iteration count.
func TestSCRAMVerifierIsPostgreSQLs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := os.Getenv("KREPLAY_TEST_DATABASE_URL") // storetest.ServerURL, which imports this package
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	_, err = tx.Exec(ctx, "SET LOCAL password_encryption = 'scram-sha-256'")
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "CREATE ROLE kreplay_test_scram PASSWORD '0123456789abcdef0123456789abcdef'")
	require.NoError(t, err)
	var stored string
	require.NoError(t, tx.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'kreplay_test_scram'").Scan(&stored))

	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
	head, _, ok := strings.Cut(strings.TrimPrefix(stored, "SCRAM-SHA-256$"), "$")
	require.True(t, ok, stored)
	iter, salt, _ := strings.Cut(head, ":")
	n, err := strconv.Atoi(iter)
	require.NoError(t, err)
	rawSalt, err := base64.StdEncoding.DecodeString(salt)
	require.NoError(t, err)
	require.Equal(t, stored, scramVerifier("0123456789abcdef0123456789abcdef", rawSalt, n))

	password, verifier := newPassword()
	require.Len(t, password, 32)
	require.Regexp(t, `^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$`, verifier)
	require.NotContains(t, verifier, password)
}
