// Package storetest gives each test a PostgreSQL database of its own, on the server named by
// KREPLAY_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable).
// A test that cannot reach PostgreSQL fails; it never skips (run `make postgres` to start one).
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/store"
)

// DefaultURL is the server tests use when KREPLAY_TEST_DATABASE_URL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL is the URL of the test server's maintenance database.
func ServerURL() string {
	if u := os.Getenv("KREPLAY_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// NewDatabase creates an empty database for the test and drops it (with FORCE), and the roles of
// the kreplay catalog in it, when the test ends. It returns the database's URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("KREPLAY_TEST_DATABASE_URL: %v", err)
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	name := "kreplay_test_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("PostgreSQL is required for this test and is not reachable at %s: %v\n(run `make postgres`, or set KREPLAY_TEST_DATABASE_URL)", u.Redacted(), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// With the roles of its catalog: roles are the server's, and would outlive the database.
		if err := store.DropDatabase(ctx, ServerURL(), name); err != nil {
			t.Errorf("drop test database %s and its roles: %v", name, err)
		}
	})
	dbURL := *u
	dbURL.Path = "/" + name
	return dbURL.String()
}

// Open creates a database for the test and returns a migrated Store on it (closed at cleanup).
func Open(t testing.TB, cfg store.Config) (*store.Store, string) {
	t.Helper()
	dbURL := NewDatabase(t)
	cfg.URL = dbURL
	s, err := store.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s, dbURL
}

// Conn connects to url for the test (closed at cleanup).
func Conn(t testing.TB, dbURL string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("connect %s: %v", dbURL, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// Querier is what Int64Map needs: a *pgx.Conn or a *pgxpool.Pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Int64Map runs a query of (text, bigint) rows, such as account -> balance, and returns them as a
// map; it fails the test on error.
func Int64Map(t testing.TB, q Querier, sql string, args ...any) map[string]int64 {
	t.Helper()
	rows, err := q.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct {
		K string
		V int64
	}, error) {
		var kv struct {
			K string
			V int64
		}
		err := r.Scan(&kv.K, &kv.V)
		return kv, err
	})
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	m := make(map[string]int64, len(out))
	for _, kv := range out {
		m[kv.K] = kv.V
	}
	return m
}
