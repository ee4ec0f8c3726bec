package lifecycle_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// Status, promote and kadm (a consumer group's lag against the last stable offsets) measure one
// lag, with transactions on the source topic: after a committed and an aborted transaction
// (whose markers take an offset each, which the version applies as markers) they agree on the
// offsets behind and all reach 0; with a transaction left open, the records in it are out of a read_committed
// consumer's reach, a version that applied everything before it is caught up (lag 0 for all
// three, though the high watermarks are past it), and it is auto-promoted.
func TestLagIsMeasuredAgainstTheLastStableOffset(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const topic = "bank.accounts"
	k := kafkatest.New(t, map[string]int32{topic: 2})
	dbURL := storetest.NewDatabase(t)
	db, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	bank := bankgen.New(topic, 2, 40, 14)
	k.Produce(bank.Events(400)...)

	cfg, err := topology.Parse([]byte(bankgen.Config(topic, 2, "global", false)))
	require.NoError(t, err)
	cfg.Kafka.Brokers = k.Addrs
	cfg.Postgres.URL = dbURL
	cfg.HTTP.Listen = "off"
	cfg.Control.StatusInterval = 200 * time.Millisecond
	cfg.Kafka.SessionTimeout = 3 * time.Second
	cfg.Kafka.RebalanceTimeout = 5 * time.Second
	cfg.SetDefaults()
	require.NoError(t, cfg.Validate())
	p := processor.New(cfg, processor.Options{Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 5 * time.Second})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case <-p.Started():
	case err := <-done:
		t.Fatalf("serve did not start: %v", err)
	}
	m := p.Manager()

	checkpoints := func(key string) map[int32]int64 {
		out := map[int32]int64{}
		rows, err := db.Query(ctx, "SELECT partition, next_offset FROM kreplay.checkpoints WHERE version = $1 AND topic = $2", key, topic)
		require.NoError(t, err)
		for rows.Next() {
			var part int32
			var next int64
			require.NoError(t, rows.Scan(&part, &next))
			out[part] = next
		}
		require.NoError(t, rows.Err())
		return out
	}
	// lags are the three views of a version's lag: its status, promote's, kadm's (LSO).
	// (-1 for the group's while kadm cannot compute it: the group has not committed yet).
	lags := func(key string) (status, promote, group int64, st *control.Status) {
		st, err := m.VersionStatus(ctx, key)
		require.NoError(t, err)
		promote, err = m.PromoteLag(ctx, key)
		require.NoError(t, err)
		if group, err = k.StableLag(cfg.GroupName("balances", key), topic); err != nil {
			group = -1
		}
		return st.LagEvents, promote, group, st
	}
	caughtUp := func(key string) func() (bool, string) {
		return func() (bool, string) {
			s, pr, g, _ := lags(key)
			cps, lso := checkpoints(key), k.StableOffsets(topic)
			return s == 0 && pr == 0 && g == 0 && maps.Equal(cps, lso),
				fmt.Sprintf("%s: lag status %d, promote %d, group %d; checkpoints %v, last stable offsets %v", key, s, pr, g, cps, lso)
		}
	}
	testkit.EventuallyWhy(t, 60*time.Second, caughtUp("balances_v1"))

	// A committed transaction while balances_v1 is paused: the three agree on how far behind it
	// is (the records and one commit marker per partition), then all reach 0.
	_, err = m.Pause(ctx, "balances_v1")
	require.NoError(t, err)
	testkit.Eventually(t, 20*time.Second, func() bool { return p.Assigned("balances_v1") == 0 }, "balances_v1 did not stop")
	before := checkpoints("balances_v1")
	tx := transactional(t, k, "committed")
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctx, bank.Events(60)...).FirstErr())
	require.NoError(t, tx.EndTransaction(ctx, kgo.TryCommit))
	// and an aborted one, whose records a read_committed consumer never sees (nor the balances).
	kept := bank.Balances()
	require.NoError(t, tx.BeginTransaction())
	require.NoError(t, tx.ProduceSync(ctx, bank.Events(20)...).FirstErr())
	require.NoError(t, tx.EndTransaction(ctx, kgo.TryAbort))
	aborted := bank.Balances()
	var behind int64
	for part, lso := range k.StableOffsets(topic) {
		behind += lso - before[part]
	}
	require.EqualValues(t, 84, behind, "80 records, a commit and an abort marker in each partition")
	testkit.EventuallyWhy(t, 10*time.Second, func() (bool, string) {
		s, pr, g, _ := lags("balances_v1")
		return s == behind && pr == behind && g == behind, fmt.Sprintf("lag status %d, promote %d, group %d; want %d", s, pr, g, behind)
	})
	_, err = m.Resume(ctx, "balances_v1")
	require.NoError(t, err)
	testkit.EventuallyWhy(t, 30*time.Second, caughtUp("balances_v1"))
	require.Equal(t, k.EndOffsets(topic), k.StableOffsets(topic), "no transaction is open yet")
	want := bank.Balances()
	for acct, total := range aborted {
		if _, ok := kept[acct]; !ok {
			delete(want, acct) // an account only the aborted transaction had
			continue
		}
		want[acct] -= total - kept[acct]
	}

	// A transaction left open: its records and the high watermarks are past the last stable
	// offsets, which the versions reach.
	open := transactional(t, k, "open")
	require.NoError(t, open.BeginTransaction())
	require.NoError(t, open.ProduceSync(ctx, bank.Events(30)...).FirstErr())
	hwms, lsos := k.EndOffsets(topic), k.StableOffsets(topic)
	for part := range hwms {
		require.Greater(t, hwms[part], lsos[part], "partition %d: the open transaction's records are past the last stable offset", part)
	}
	testkit.EventuallyWhy(t, 30*time.Second, caughtUp("balances_v1"))

	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", AutoPromote: true, Start: true})
	require.NoError(t, err)
	testkit.EventuallyWhy(t, 60*time.Second, func() (bool, string) {
		proj, err := p.Store().Projection(ctx, "balances")
		require.NoError(t, err)
		st, err := m.VersionStatus(ctx, "balances_v2")
		require.NoError(t, err)
		return proj.Live == "balances_v2", fmt.Sprintf("balances_v2 was not auto-promoted: live %s; balances_v2 %s, lag %d (%+v)", proj.Live, st.State, st.LagEvents, st.Partitions)
	})
	for _, key := range []string{"balances_v1", "balances_v2"} {
		testkit.EventuallyWhy(t, 30*time.Second, caughtUp(key))
		_, _, _, st := lags(key)
		require.Len(t, st.Partitions, 2)
		for _, ps := range st.Partitions {
			require.Equal(t, lsos[ps.Partition], ps.LastStableOffset, "%s %+v", key, ps)
			require.Equal(t, hwms[ps.Partition], ps.HighWatermark, "%s %+v", key, ps)
			require.Equal(t, ps.LastStableOffset, ps.NextOffset, "%s %+v", key, ps)
			require.Zero(t, ps.Lag, "%s %+v", key, ps)
		}
		require.Zero(t, st.LagSeconds, key)
	}
	require.Equal(t, want, storetest.Int64Map(t, db, "SELECT account_id, total FROM public.balances"), "the live view has every committed event, none of the open transaction")
	require.Equal(t, want, storetest.Int64Map(t, db, "SELECT account_id, total FROM balances_v1.balances"))

	// promote with --max-lag 0 and no --wait is not refused as behind either.
	rep, err := m.Promote(ctx, "balances_v1", control.PromoteOptions{})
	require.NoError(t, err)
	require.Equal(t, "balances_v1", rep.To)
}

// transactional is a transactional producer on the cluster, closed at cleanup (a transaction
// still open is left to the broker).
func transactional(t *testing.T, k *kafkatest.Cluster, id string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs...), kgo.TransactionalID(id), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}
