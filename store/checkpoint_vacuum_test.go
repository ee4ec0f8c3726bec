package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// While a snapshot is open, PostgreSQL cannot prune the checkpoint rows every batch replaces, and
// kreplay.checkpoints grows; vacuumed between two such stretches, it grows no further in the
// second: the cost of kreplay.advance does not grow with the history.
func TestVacuumedCheckpointsDoNotGrowWithTheHistory(t *testing.T) {
	t.Parallel()
	s, dbURL := open(t)
	ctx := context.Background()
	started(t, s, "grows_v1", false)
	_, err := s.Claim(ctx, "grows_v1", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "grows_v1", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer a.Close(ctx)
	reader := storetest.Conn(t, dbURL)

	off := int64(0)
	stretch := func() int64 {
		t.Helper()
		tx, err := reader.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "SELECT count(*) FROM kreplay.checkpoints") // takes the snapshot
		require.NoError(t, err)
		for range 300 {
			_, err := a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 1}`, 0, off), item("Deposited", "y", `{"amount": 1}`, 1, off)})
			require.NoError(t, err)
			off++
		}
		require.NoError(t, tx.Rollback(ctx))
		return scalar(t, s, "SELECT pg_relation_size('kreplay.checkpoints') / current_setting('block_size')::int")
	}
	first := stretch()
	require.Greater(t, first, int64(2), "the held snapshot made the table grow")
	require.NoError(t, s.VacuumCheckpoints(ctx))
	require.LessOrEqual(t, stretch(), first+1, "the vacuumed pages were used again")
	require.Equal(t, int64(2*2*300), scalar(t, s, "SELECT sum(applied_events)::bigint FROM kreplay.checkpoints WHERE version = 'grows_v1'"))
}
