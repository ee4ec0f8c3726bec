package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// Promoting over a live version that is paused (or failed) keeps it paused: the report says so
// (the CLI printed "balances_v1 retired") and the version resumes as retired. A rollback given a
// version key instead of a projection says so, and a promote of a replay still replaying says
// how to wait for it.
func TestPromoteAndRollbackSayWhatTheyDidAndWhy(t *testing.T) {
	t.Parallel()
	b, r, bank := liveBank(t, 2, 20, 11, 300)
	m, ctx := r.p.Manager(), context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 not tailing")

	_, err = m.Pause(ctx, "balances_v1")
	require.NoError(t, err)
	rep, err := m.Promote(ctx, "balances_v2", control.PromoteOptions{})
	require.NoError(t, err)
	require.Equal(t, "balances_v1", rep.From)
	require.Equal(t, "paused", rep.PreviousState)
	require.False(t, rep.PreviousRetired)
	require.Equal(t, store.StatePaused, b.state("balances_v1"))
	_, err = m.Rollback(ctx, "balances_v2")
	require.EqualError(t, err, `rollback takes a projection, not a version: "balances_v2" is a version of projection "balances" (kreplay rollback balances)`)

	// A replay that has not caught up (held here: its checkpoint rows are locked, so it cannot
	// claim them, and it has many batches to apply should it claim them first) cannot be
	// promoted; the refusal says how to wait for it.
	b.kafka.Produce(bank.Events(30000)...)
	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v3", Projection: "balances", Start: true})
	require.NoError(t, err)
	tx, err := b.db.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) }) // a failed assertion must not leave the pool waiting for it
	_, err = tx.Exec(ctx, "SELECT * FROM kreplay.checkpoints WHERE version = 'balances_v3' FOR UPDATE")
	require.NoError(t, err)
	_, err = m.Promote(ctx, "balances_v3", control.PromoteOptions{})
	require.EqualError(t, err, "cannot promote balances_v3: it is replaying (allowed from: tailing, retired); it is tailing once it has caught up (pass --wait to wait for it)")
	require.NoError(t, tx.Rollback(ctx))

	v, err := m.Resume(ctx, "balances_v1")
	require.NoError(t, err)
	require.Equal(t, store.StateRetired, v.State)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v2", bankTopic) }, "v2 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("public"))
}
