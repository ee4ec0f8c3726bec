package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/store"
)

// Promoting over a live version that is paused (or failed) keeps it paused: the report says so
// (the CLI printed "balances_v1 retired") and the version resumes as retired. A rollback given a
// version key instead of a projection says so.
func TestPromoteReportsThePreviousVersionsRealState(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 2})
	bank := kafkatest.NewBank(topic, 2, 20, 11)
	b.kafka.Produce(bank.Events(300)...)
	r := b.start(b.config(kafkatest.BankConfig(topic, 2, "global", false)))
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	m, ctx := r.p.Manager(), context.Background()
	_, err := m.Create(ctx, processor.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 not tailing")

	_, err = m.Pause(ctx, "balances_v1")
	require.NoError(t, err)
	rep, err := m.Promote(ctx, "balances_v2", processor.PromoteOptions{})
	require.NoError(t, err)
	require.Equal(t, "balances_v1", rep.From)
	require.Equal(t, "paused", rep.PreviousState)
	require.False(t, rep.PreviousRetired)
	require.Equal(t, store.StatePaused, b.state("balances_v1"))
	_, err = m.Rollback(ctx, "balances_v2")
	require.EqualError(t, err, `rollback takes a projection, not a version: "balances_v2" is a version of projection "balances" (kreplay rollback balances)`)

	v, err := m.Resume(ctx, "balances_v1")
	require.NoError(t, err)
	require.Equal(t, store.StateRetired, v.State)
	require.Equal(t, bank.Balances(), b.balances("public"))
}
