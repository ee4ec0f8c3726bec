package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
)

// A passing database error at start does not stop serve: kreplay's PostgreSQL sessions are
// terminated again and again, from when the catalog exists, while serve checks the config
// against PostgreSQL and bootstraps its projections (SQLSTATE 57P01: as a restart or an operator does), and serve
// waits it out instead of exiting with "config refused by PostgreSQL".
func TestTerminatedSessionsAtStartAreWaitedOut(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 50, 9)
	b.kafka.Produce(bank.Events(500)...)
	cfg := b.config(bankgen.Config(topic, 4, "global", false))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	terminated := make(chan int, 1)
	go func() { // once the catalog is migrated, terminate every kreplay session of this database for 3s
		n := 0
		defer func() { terminated <- n }()
		for ctx.Err() == nil {
			var migrated bool
			if b.db.QueryRow(ctx, "SELECT to_regclass('kreplay.versions') IS NOT NULL").Scan(&migrated) == nil && migrated {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && ctx.Err() == nil; time.Sleep(10 * time.Millisecond) {
			var k int
			_ = b.db.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name LIKE 'kreplay%' AND pid <> pg_backend_pid()`).Scan(&k)
			n += k
		}
	}()
	p := processor.New(cfg, processor.Options{ShutdownTimeout: 5 * time.Second})
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Started():
	case err := <-done:
		t.Fatalf("serve stopped at start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not start within 60s")
	}
	require.Positive(t, <-terminated, "no session was terminated: the test did not test anything")
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "balances_v1 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("public"))
	cancel()
	require.NoError(t, <-done)
}
