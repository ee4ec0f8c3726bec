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

// Two versions lagging on the same partition at different offsets each get the age of their own
// first unapplied record as lag_seconds (it was the age of whichever version was read last).
func TestLagSecondsIsEachVersionsOwn(t *testing.T) {
	t.Parallel()
	const topic = bankTopic
	b, r, bank := liveBank(t, 1, 10, 1, 5)
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 not tailing")

	// v2 stops at offset 5; the next record is old (2026-01-01).
	_, err = m.Pause(ctx, "balances_v2")
	require.NoError(t, err)
	old := bank.Events(1)
	b.kafka.Produce(old...)
	eventually(t, 30*time.Second, func() bool { return b.checkpoints("balances_v1", topic)[0] == 6 }, "v1 did not apply")

	// v1 stops at offset 6; the next record is fresh.
	_, err = m.Pause(ctx, "balances_v1")
	require.NoError(t, err)
	fresh := bank.Events(1)
	fresh[0].Timestamp = time.Now()
	b.kafka.Produce(fresh...)

	sts, err := m.Status(ctx, false)
	require.NoError(t, err)
	got := map[string]control.Status{}
	for _, st := range sts {
		got[st.Key] = st
	}
	t.Logf("v1: lag_events=%d lag_seconds=%.0f; v2: lag_events=%d lag_seconds=%.0f",
		got["balances_v1"].LagEvents, got["balances_v1"].LagSeconds, got["balances_v2"].LagEvents, got["balances_v2"].LagSeconds)
	require.EqualValues(t, 1, got["balances_v1"].LagEvents)
	require.EqualValues(t, 2, got["balances_v2"].LagEvents)
	require.Less(t, got["balances_v1"].LagSeconds, 60.0, "v1's first unapplied record is seconds old")
	require.Greater(t, got["balances_v2"].LagSeconds, 3600.0, "v2's first unapplied record is from 2026-01-01")
}
