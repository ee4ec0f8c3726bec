package processor_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// promotable starts a bank projection with v1 live and v2 (with an events column) tailing.
func promotable(t *testing.T, events int) (*bundle, *running, *bankgen.Bank) {
	t.Helper()
	const topic = bankTopic
	b, r, bank := liveBank(t, 4, 100, 51, events)
	require.NoError(t, r.stop())
	r = b.start(b.config(bankgen.Config(topic, 4, "global", true)))
	_, err := r.p.Manager().Create(context.Background(), lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 did not reach tailing")
	return b, r, bank
}

// A reader holding a long transaction on a view makes promote retry (each attempt gives up after
// lock_timeout) instead of queueing every other reader behind it: other readers keep reading
// while the long transaction is open, and the promotion completes once it ends.
func TestALongReaderMakesPromoteRetryWithoutBlockingOthers(t *testing.T) {
	t.Parallel()
	b, r, _ := promotable(t, 2000)
	ctx := context.Background()
	long := connect(t, b.dbURL)
	tx, err := long.Begin(ctx)
	require.NoError(t, err)
	var n int64
	require.NoError(t, tx.QueryRow(ctx, "SELECT count(*) FROM public.balances").Scan(&n))
	require.Positive(t, n)

	var during atomic.Int64
	var readErr atomic.Value
	rctx, stop := context.WithCancel(ctx)
	other := connect(t, b.dbURL)
	var wg sync.WaitGroup
	wg.Go(func() {
		for rctx.Err() == nil {
			var c int64
			if err := other.QueryRow(rctx, "SELECT count(*) FROM public.balances").Scan(&c); err != nil {
				if rctx.Err() == nil {
					readErr.Store(err)
				}
				return
			}
			during.Add(1)
		}
	})
	type result struct {
		rep *control.SwapReport
		err error
	}
	promoted := make(chan result, 1)
	go func() {
		rep, err := r.p.Manager().Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second), MaxLag: 1 << 30})
		promoted <- result{rep, err}
	}()
	time.Sleep(1500 * time.Millisecond) // the long reader keeps its transaction open
	readsWhileLong := during.Load()
	select {
	case res := <-promoted:
		t.Fatalf("promote completed while a reader held the view: %+v %v", res.rep, res.err)
	default:
	}
	require.NoError(t, tx.Commit(ctx))
	res := <-promoted
	stop()
	wg.Wait()
	require.NoError(t, res.err)
	require.Nil(t, readErr.Load())
	require.Greater(t, res.rep.Attempts, 1, "promote did not retry")
	require.Greater(t, readsWhileLong, int64(10), "other readers were blocked behind the long transaction")
	t.Logf("promote took %d attempts; another reader made %d reads while the long transaction was open", res.rep.Attempts, readsWhileLong)
	require.Equal(t, store.StateLive, b.state("balances_v2"))
}

// After promote the views have the new shape and exact values and keep their grants; the
// retired version keeps tailing; rollback brings back the old shape, with exact values and
// grants. The reader role kreplay grants to reads the live views but not the versions' schemas.
func TestPromoteAndRollbackSwitchShapesAndKeepGrants(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 100, 61)
	b.kafka.Produce(bank.Events(3000)...)
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	grantee, reader := "analyst_"+hex.EncodeToString(suffix[:]), "reader_"+hex.EncodeToString(suffix[:])
	for _, role := range []string{grantee, reader} {
		_, err := b.db.Exec(context.Background(), "CREATE ROLE "+role+" NOLOGIN")
		require.NoError(t, err)
		t.Cleanup(func() {
			_, _ = b.db.Exec(context.Background(), "DROP OWNED BY "+role)
			_, _ = b.db.Exec(context.Background(), "DROP ROLE "+role)
		})
	}
	cfg := b.config(bankgen.Config(topic, 4, "global", false))
	cfg.Postgres.ReaderRole = reader
	r := b.start(cfg)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	_, err := b.db.Exec(context.Background(), "GRANT SELECT ON public.balances TO "+grantee)
	require.NoError(t, err)
	require.NoError(t, r.stop())

	cfg = b.config(bankgen.Config(topic, 4, "global", true))
	cfg.Postgres.ReaderRole = reader
	r = b.start(cfg)
	m := r.p.Manager()
	ctx := context.Background()
	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 did not reach tailing")

	hasEvents := func() bool {
		_, err := b.db.Exec(ctx, "SELECT events FROM public.balances LIMIT 1")
		return err == nil
	}
	require.False(t, hasEvents())

	rep, err := m.Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, "balances_v1", rep.From)
	require.True(t, hasEvents(), "the view has v2's shape")
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, bank.Counts(), b.counts("public"))
	checkPrivileges(t, b, grantee, reader)

	// The retired version keeps tailing.
	b.kafka.Produce(bank.Events(700)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) && b.caughtUp("balances_v2", topic) }, "versions did not catch up")
	require.Equal(t, store.StateRetired, b.state("balances_v1"))
	require.Equal(t, bank.Balances(), b.balances("balances_v1"))

	rep, err = m.Rollback(ctx, "balances")
	require.NoError(t, err)
	require.Equal(t, "balances_v1", rep.To)
	require.False(t, hasEvents(), "the view has v1's shape again")
	require.Equal(t, bank.Balances(), b.balances("public"))
	checkPrivileges(t, b, grantee, reader)

	var live, previous string
	require.NoError(t, b.db.QueryRow(ctx, "SELECT live_version, previous_version FROM kreplay.projections WHERE name = 'balances'").Scan(&live, &previous))
	require.Equal(t, []string{"balances_v1", "balances_v2"}, []string{live, previous})
	st, err := m.VersionStatus(ctx, "balances_v2")
	require.NoError(t, err)
	require.Equal(t, "balances_v1", st.LiveVersion)
	require.Equal(t, "balances_v2", st.PreviousVersion)
}

func checkPrivileges(t *testing.T, b *bundle, grantee, reader string) {
	t.Helper()
	var g, rv, rs bool
	require.NoError(t, b.db.QueryRow(context.Background(), `SELECT has_table_privilege($1, 'public.balances', 'SELECT'),
		has_table_privilege($2, 'public.balances', 'SELECT'), has_schema_privilege($2, 'balances_v2', 'USAGE')`, grantee, reader).Scan(&g, &rv, &rs))
	require.True(t, g, "the grant on the view survived")
	require.True(t, rv, "the reader role reads the live view")
	require.False(t, rs, "the reader role cannot use a version's schema")
}

// verify reports equal for an identical definition and names the check that differs for a
// definition with a deliberate bug; promote --verified follows the last verify.
func TestVerifyComparesAtTheSameOffsets(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 100, 71)
	b.kafka.Produce(bank.Events(4000)...)
	good := bankgen.Config(topic, 4, "global", false)
	r := b.start(b.config(good))
	m := r.p.Manager()
	ctx := context.Background()
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "same_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	require.NoError(t, r.stop())

	// A buggy definition: withdrawals add.
	buggy := strings.Replace(good, "-(@data->>'amount')::bigint", "(@data->>'amount')::bigint", 1)
	require.NotEqual(t, good, buggy)
	r = b.start(b.config(buggy))
	m = r.p.Manager()
	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "buggy_v3", Projection: "balances", Start: true})
	require.NoError(t, err)
	for _, key := range []string{"same_v2", "buggy_v3"} {
		eventually(t, 30*time.Second, func() bool { return b.state(key) == store.StateTailing }, "%s did not reach tailing", key)
	}

	// Events keep arriving: verify has to hold both versions at one offset vector.
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			b.kafka.Produce(bank.Events(50)...)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	rep, err := m.Verify(ctx, "same_v2")
	require.NoError(t, err)
	require.True(t, rep.Passed, "%+v", rep.Results)
	require.Equal(t, "balances_v1", rep.Against)
	require.Len(t, rep.Results, 4) // 2 checks, row count, checksum
	rep, err = m.Verify(ctx, "buggy_v3")
	stop.Store(true)
	<-done
	require.NoError(t, err)
	require.False(t, rep.Passed)
	require.Equal(t, []string{"check SELECT coalesce(sum(total), 0) FROM balances", "checksum balances"}, rep.Differs)

	_, err = m.Promote(ctx, "buggy_v3", control.PromoteOptions{Verified: true, Wait: control.Duration(10 * time.Second)})
	require.ErrorIs(t, err, control.ErrInvalid)
	require.ErrorContains(t, err, "found differences")
	_, err = m.Promote(ctx, "same_v2", control.PromoteOptions{Verified: true, Wait: control.Duration(10 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.versions WHERE hold IS NOT NULL"), "verify released its holds")
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) && b.caughtUp("same_v2", topic) }, "held versions did not resume")
}

// remove refuses the live version; removing a retired or a shadow version drops its schema and
// its consumer group.
func TestRemove(t *testing.T) {
	t.Parallel()
	b, r, bank := promotable(t, 1000)
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Remove(ctx, "balances_v1")
	require.ErrorIs(t, err, control.ErrInvalid)
	require.ErrorContains(t, err, "live version")
	_, err = m.Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err)
	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v3", Projection: "balances", Start: true})
	require.NoError(t, err)
	for _, key := range []string{"balances_v1", "balances_v3"} { // retired, shadow
		group := groupName("balances", key)
		eventually(t, 20*time.Second, func() bool { return len(b.kafka.Committed(group, "bank.accounts")) > 0 }, "%s never committed", key)
		_, err := m.Remove(ctx, key)
		require.NoError(t, err, key)
		require.Equal(t, store.StateRemoved, b.state(key))
		require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", key), "schema of %s", key)
		require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.checkpoints WHERE version = $1", key))
		groups, err := b.kafka.Admin.ListGroups(ctx)
		require.NoError(t, err)
		_, exists := groups[group]
		require.False(t, exists, "group %s still exists", group)
	}
	_, err = m.Remove(ctx, "balances_v9")
	require.ErrorContains(t, err, `unknown replay "balances_v9"`)
	b.kafka.Produce(bank.Events(100)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v2", "bank.accounts") }, "the live version stopped")
	require.Equal(t, bank.Balances(), b.balances("public"))
}

// A replay created with --auto-promote is verified and promoted by itself once it is tailing
// with lag 0; one whose verify finds differences is not.
func TestAutoPromote(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 100, 81)
	b.kafka.Produce(bank.Events(3000)...)
	good := bankgen.Config(topic, 4, "global", false)
	r := b.start(b.config(good))
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true, AutoPromote: true})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return b.state("balances_v2") == store.StateLive }, "balances_v2 was not promoted by itself")
	require.Equal(t, store.StateRetired, b.state("balances_v1"))
	require.Equal(t, int64(1), b.scalar("SELECT count(*) FROM kreplay.verifications WHERE version = 'balances_v2' AND passed"))
	lag, err := m.Lag(ctx, "balances_v2")
	require.NoError(t, err)
	require.Equal(t, int64(0), lag.LagEvents)
	require.Len(t, lag.Partitions, 4)
	require.NoError(t, r.stop())

	buggy := strings.Replace(good, "-(@data->>'amount')::bigint", "(@data->>'amount')::bigint", 1)
	r = b.start(b.config(buggy))
	_, err = r.p.Manager().Create(ctx, lifecycle.CreateRequest{Key: "balances_v3", Projection: "balances", Start: true, AutoPromote: true})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool {
		return b.scalar("SELECT count(*) FROM kreplay.verifications WHERE version = 'balances_v3' AND NOT passed") == 1
	}, "balances_v3 was not verified")
	time.Sleep(time.Second)
	require.Equal(t, store.StateTailing, b.state("balances_v3"), "a version whose verify failed is not promoted")
	require.Equal(t, store.StateLive, b.state("balances_v2"))
}

// While events keep arriving, a live version of ordering global always holds the newest for
// max_lateness, so its lag is rarely 0: a replay created with --auto-promote is still verified
// (both held at one offset vector under traffic) and promoted once its lag is no more than the
// live version's, and the live view is exact once the events stop.
func TestAutoPromoteWhileEventsKeepArriving(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 100, 82)
	b.kafka.Produce(bank.Events(3000)...)
	r := b.start(b.config(bankgen.Config(topic, 4, "global", false)))
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")

	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				b.kafka.Produce(bank.Events(20)...)
			}
		}
	}()
	ctx := context.Background()
	_, err := r.p.Manager().Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true, AutoPromote: true})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return b.state("balances_v2") == store.StateLive }, "balances_v2 was not promoted while events arrived")
	require.Equal(t, int64(1), b.scalar("SELECT count(*) FROM kreplay.verifications WHERE version = 'balances_v2' AND passed"))
	close(stop)
	<-produced
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v2", topic) }, "balances_v2 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Zero(t, b.scalar("SELECT late_events FROM kreplay.versions WHERE key = 'balances_v2'"), "late events")
}
