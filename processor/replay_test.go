package processor_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// counts reads schema.balances' event counts (account -> events).
func (b *bundle) counts(schema string) map[string]int64 {
	b.t.Helper()
	return storetest.Int64Map(b.t, b.db, "SELECT account_id, events FROM "+schema+".balances")
}

func (b *bundle) state(key string) store.State {
	b.t.Helper()
	var s string
	require.NoError(b.t, b.db.QueryRow(context.Background(), "SELECT state FROM kreplay.versions WHERE key = $1", key).Scan(&s))
	return store.State(s)
}

// A replay of a changed definition (an added column) catches up from offset zero while events
// keep arriving, then tails; its tables match the events exactly; the live view stays on v1,
// with v1's shape and exact values, throughout. Its status: lag equals what kadm computes from
// the group's committed offsets, progress only grows, from 0 to 1, and the state is replaying
// exactly as long as some partition is below its start watermark.
func TestReplayOfAChangedDefinitionWhileEventsArrive(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 8})
	bank := bankgen.New(topic, 8, 400, 11)
	b.kafka.Produce(bank.Events(20000)...)

	v1 := b.start(b.config(bankgen.Config(topic, 8, "global", false)))
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	require.NoError(t, v1.stop())

	// The config now has the new definition: v1 keeps its snapshot (drift), v2 replays it.
	cfg := b.config(bankgen.Config(topic, 8, "global", true))
	cfg.Projections[0].BatchSize = 250 // a slower replay, to watch it
	r := b.start(cfg)
	m := r.p.Manager()
	var mu sync.Mutex
	var stop atomic.Bool
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for !stop.Load() {
			mu.Lock()
			recs := bank.Events(200)
			mu.Unlock()
			b.kafka.Produce(recs...)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	v, err := m.Create(context.Background(), lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	require.Equal(t, store.StateReplaying, v.State)

	var progress []float64
	sawReplaying := false
	for b.state("balances_v2") == store.StateReplaying {
		st, err := m.VersionStatus(context.Background(), "balances_v2")
		require.NoError(t, err)
		progress = append(progress, st.Progress)
		// The view stays v1's: no events column.
		_, err = b.db.Exec(context.Background(), "SELECT events FROM public.balances LIMIT 1")
		require.ErrorContains(t, err, "events")
		// Replaying exactly as long as a partition is below its start watermark.
		var state string
		var below int64
		require.NoError(t, b.db.QueryRow(context.Background(), `SELECT v.state, (SELECT count(*) FROM kreplay.checkpoints c
			WHERE c.version = v.key AND c.next_offset < c.target_offset) FROM kreplay.versions v WHERE v.key = 'balances_v2'`).Scan(&state, &below))
		if state == string(store.StateReplaying) {
			sawReplaying = true
			require.Positive(t, below, "replaying with every partition at its start watermark")
		} else {
			require.Zero(t, below, "%s with a partition below its start watermark", state)
		}
		time.Sleep(30 * time.Millisecond)
	}
	require.True(t, sawReplaying)
	require.Equal(t, store.StateTailing, b.state("balances_v2"))
	require.NotEmpty(t, progress)
	for i := 1; i < len(progress); i++ {
		require.GreaterOrEqual(t, progress[i], progress[i-1], "progress went back: %v", progress)
	}
	st, err := m.VersionStatus(context.Background(), "balances_v2")
	require.NoError(t, err)
	require.Equal(t, 1.0, st.Progress)
	require.False(t, st.Drift)
	st1, err := m.VersionStatus(context.Background(), "balances_v1")
	require.NoError(t, err)
	require.True(t, st1.Drift, "v1 runs its old snapshot")
	require.True(t, st1.Live)

	stop.Store(true)
	<-producing
	for i := 0; i < 40 && (!b.caughtUp("balances_v1", topic) || !b.caughtUp("balances_v2", topic)); i++ {
		time.Sleep(300 * time.Millisecond)
	}
	for _, key := range []string{"balances_v1", "balances_v2"} {
		eventually(t, 30*time.Second, func() bool { return b.caughtUp(key, topic) }, "%s did not catch up", key)
	}
	mu.Lock()
	want, counts := bank.Balances(), bank.Counts()
	mu.Unlock()
	require.Equal(t, want, b.balances("balances_v2"))
	require.Equal(t, counts, b.counts("balances_v2"))
	require.Equal(t, want, b.balances("public"), "the live view (v1) has exact values")

	// Status lag equals the lag kadm computes from the group's committed offsets: pause v2 (it
	// stops and commits), produce, and compare.
	group := groupName("balances", "balances_v2")
	_, err = m.Pause(context.Background(), "balances_v2")
	require.NoError(t, err)
	eventually(t, 20*time.Second, func() bool {
		committed := b.kafka.Committed(group, topic)
		for p, o := range b.checkpoints("balances_v2", topic) {
			if committed[p] != o {
				return false
			}
		}
		return true
	}, "the paused version's committed offsets do not equal its checkpoints")
	b.kafka.Produce(bank.Events(321)...)
	st, err = m.VersionStatus(context.Background(), "balances_v2")
	require.NoError(t, err)
	require.Equal(t, int64(321), st.LagEvents)
	require.Equal(t, int64(321), b.kafka.Lag(group, topic))
	require.Equal(t, "paused", st.State)
	_, err = m.Resume(context.Background(), "balances_v2")
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v2", topic) }, "v2 did not catch up after resume")
	require.Equal(t, bank.Balances(), b.balances("balances_v2"))
	require.Equal(t, store.StateTailing, b.state("balances_v2"))
}
