package processor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// selectStarReaders are readers as most applications are: a pgxpool in its default mode
// (QueryExecModeCacheStatement: each connection prepares `SELECT *` once and reuses it) reading
// the live view in a loop. Each read must be exactly want (no events arrive meanwhile).
type selectStarReaders struct {
	reads, errors, wrong atomic.Int64
	mu                   sync.Mutex
	errs                 []error
	stop                 func()
	wg                   sync.WaitGroup
}

const selectStarConns = 4

func startSelectStarReaders(t *testing.T, dbURL string, want map[string]int64) *selectStarReaders {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	require.Equal(t, pgx.QueryExecModeCacheStatement, cfg.ConnConfig.DefaultQueryExecMode, "the readers use pgx's default mode")
	cfg.MaxConns, cfg.MinConns = selectStarConns, selectStarConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithCancel(context.Background())
	r := &selectStarReaders{stop: cancel}
	for range selectStarConns {
		r.wg.Go(func() {
			for ctx.Err() == nil {
				rows, err := pool.Query(ctx, "SELECT * FROM public.balances")
				var got []map[string]any
				if err == nil {
					got, err = pgx.CollectRows(rows, pgx.RowToMap)
				}
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					r.errors.Add(1)
					r.mu.Lock()
					r.errs = append(r.errs, err)
					r.mu.Unlock()
					continue
				}
				balances := map[string]int64{}
				for _, row := range got {
					balances[row["account_id"].(string)] = row["total"].(int64)
				}
				if fmt.Sprint(balances) != fmt.Sprint(want) {
					r.wrong.Add(1)
				}
				r.reads.Add(1)
			}
		})
	}
	// Every connection has prepared the statement before the first swap.
	eventually(t, 10*time.Second, func() bool { return r.reads.Load() >= 4*selectStarConns }, "the readers did not read")
	return r
}

func (r *selectStarReaders) halt() {
	r.stop()
	r.wg.Wait()
}

// Readers with cached prepared `SELECT *` statements (pgx's default) never notice a promotion
// between versions whose tables have the same shape: through promote, rollback and promote,
// every read succeeds and is exact, and each swap reports no shape change.
func TestSameShapePromotionsAreInvisibleToCachedSelectStar(t *testing.T) {
	t.Parallel()
	b, r, bank := liveBank(t, 4, 100, 91, 2000)
	require.NoError(t, r.stop())
	r = b.start(b.config(bankgen.Config(bankTopic, 4, "global", false)))
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 did not reach tailing")

	vrep, err := m.Verify(ctx, "balances_v2")
	require.NoError(t, err)
	require.True(t, vrep.Passed)
	require.Empty(t, vrep.ShapeChanges)
	require.False(t, vrep.ShapeChangeNeedsFlag)

	readers := startSelectStarReaders(t, b.dbURL, bank.Balances())
	wait := control.PromoteOptions{Wait: control.Duration(30 * time.Second)}
	var lives []string
	for i, step := range []func() (*control.SwapReport, error){
		func() (*control.SwapReport, error) { return m.Promote(ctx, "balances_v2", wait) },
		func() (*control.SwapReport, error) { return m.Rollback(ctx, "balances") },
		func() (*control.SwapReport, error) { return m.Promote(ctx, "balances_v2", wait) },
	} {
		before := readers.reads.Load()
		rep, err := step()
		require.NoError(t, err, "swap %d", i)
		require.Empty(t, rep.ShapeChanges, "swap %d", i)
		lives = append(lives, rep.To)
		// The readers go on reading after the swap: their cached statements run on the new tables.
		eventually(t, 10*time.Second, func() bool { return readers.reads.Load() >= before+4*selectStarConns }, "no reads after swap %d", i)
	}
	readers.halt()
	require.Equal(t, []string{"balances_v2", "balances_v1", "balances_v2"}, lives)
	require.Zero(t, readers.errors.Load(), "reader errors: %v", readers.errs)
	require.Zero(t, readers.wrong.Load(), "reads that were not the exact balances")
	require.Positive(t, readers.reads.Load())
	t.Logf("%d exact reads of SELECT * through 3 same-shape swaps, 0 errors", readers.reads.Load())
	require.Equal(t, bank.Balances(), b.balances("public"))
}

// The contract for a promotion that changes the views' shape: one that only adds columns goes
// through and lists them (and the cached `SELECT *` of each pgx connection fails once with
// 0A000, as the README says); one that retypes or removes a column is refused without
// --allow-shape-change, naming the columns and the flag, and changes nothing; with it, it goes
// through and lists the change. Rollback is never refused, and lists the change too.
func TestShapeChangingPromotionNeedsAllowShapeChange(t *testing.T) {
	t.Parallel()
	b, r, bank := liveBank(t, 4, 100, 93, 2000)
	require.NoError(t, r.stop())
	// v2 adds the events column.
	r = b.start(b.config(bankgen.Config(bankTopic, 4, "global", true)))
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 did not reach tailing")

	readers := startSelectStarReaders(t, b.dbURL, bank.Balances())
	wait := control.PromoteOptions{Wait: control.Duration(30 * time.Second)}
	rep, err := m.Promote(ctx, "balances_v2", wait)
	require.NoError(t, err, "adding a column needs no flag")
	require.Equal(t, []store.ShapeChange{{View: "public.balances", Added: []store.Column{{Name: "events", Type: "bigint"}}}}, rep.ShapeChanges)
	before := readers.reads.Load()
	eventually(t, 10*time.Second, func() bool { return readers.reads.Load() >= before+4*selectStarConns }, "no reads after the promotion")
	readers.halt()
	require.Zero(t, readers.wrong.Load())
	// Each connection's cached SELECT * fails once, then pgx prepares it again.
	require.GreaterOrEqual(t, readers.errors.Load(), int64(1))
	require.LessOrEqual(t, readers.errors.Load(), int64(selectStarConns))
	for _, e := range readers.errs {
		var pgErr *pgconn.PgError
		require.True(t, errors.As(e, &pgErr), "%v", e)
		require.Equal(t, "0A000", pgErr.Code, "%v", e)
		require.Contains(t, pgErr.Message, "cached plan must not change result type")
	}

	// v3 retypes total (bigint -> numeric) and removes events again: refused without the flag.
	require.NoError(t, r.stop())
	v3 := strings.Replace(bankgen.Config(bankTopic, 4, "global", false), "total bigint NOT NULL", "total numeric NOT NULL", 1)
	r = b.start(b.config(v3))
	m = r.p.Manager()
	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v3", Projection: "balances", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v3") == store.StateTailing }, "v3 did not reach tailing")

	want := []store.ShapeChange{{View: "public.balances",
		Removed: []store.Column{{Name: "events", Type: "bigint"}},
		Retyped: []store.ColumnRetype{{Name: "total", From: "bigint", To: "numeric"}}}}
	vrep, err := m.Verify(ctx, "balances_v3")
	require.NoError(t, err)
	require.Equal(t, want, vrep.ShapeChanges)
	require.True(t, vrep.ShapeChangeNeedsFlag)

	_, err = m.Promote(ctx, "balances_v3", wait)
	require.ErrorIs(t, err, control.ErrInvalid)
	require.ErrorContains(t, err, "public.balances: removes events bigint; retypes total bigint -> numeric")
	require.ErrorContains(t, err, "--allow-shape-change")
	require.Equal(t, store.StateLive, b.state("balances_v2"), "the refused promotion changed nothing")
	require.Equal(t, store.StateTailing, b.state("balances_v3"))
	require.Equal(t, int64(2), b.scalar("SELECT count(*) FROM kreplay.promotions WHERE projection = 'balances'"), "v1's bootstrap and v2's promotion only")
	require.Equal(t, "bigint", b.viewColumnType("total"))

	rep, err = m.Promote(ctx, "balances_v3", control.PromoteOptions{Wait: control.Duration(30 * time.Second), AllowShapeChange: true})
	require.NoError(t, err)
	require.Equal(t, want, rep.ShapeChanges)
	require.Equal(t, "numeric", b.viewColumnType("total"))
	require.Equal(t, bank.Balances(), b.balancesAs("SELECT account_id, total::bigint FROM public.balances"))

	// Rollback to v2 adds events back and retypes total: never refused, but listed.
	rep, err = m.Rollback(ctx, "balances")
	require.NoError(t, err)
	require.Equal(t, "balances_v2", rep.To)
	require.Equal(t, []store.ShapeChange{{View: "public.balances",
		Retyped: []store.ColumnRetype{{Name: "total", From: "numeric", To: "bigint"}},
		Added:   []store.Column{{Name: "events", Type: "bigint"}}}}, rep.ShapeChanges)
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, bank.Counts(), b.counts("public"))
}

// An --auto-promote version whose promotion would remove a column is held: auto-promotion never
// makes such a change by itself, and the version's status says why.
func TestAutoPromoteHoldsABreakingShapeChange(t *testing.T) {
	t.Parallel()
	const topic = bankTopic
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 100, 95)
	b.kafka.Produce(bank.Events(2000)...)
	r := b.start(b.config(bankgen.Config(topic, 4, "global", true)))
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	require.NoError(t, r.stop())
	// v2 drops the events column.
	r = b.start(b.config(bankgen.Config(topic, 4, "global", false)))
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true, AutoPromote: true})
	require.NoError(t, err)
	var held string
	eventually(t, 60*time.Second, func() bool {
		for _, st := range r.p.Statuses() {
			if st.Key == "balances_v2" {
				held = st.AutoPromoteHeld
			}
		}
		return held != ""
	}, "balances_v2's status does not say auto-promotion holds it")
	require.Contains(t, held, "removes events bigint")
	require.Contains(t, held, "--allow-shape-change")
	time.Sleep(time.Second)
	require.Equal(t, store.StateTailing, b.state("balances_v2"), "auto-promotion made a breaking shape change")
	require.Equal(t, store.StateLive, b.state("balances_v1"))
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.verifications WHERE version = 'balances_v2'"), "a held version is not verified")
}

// viewColumnType is the type of a column of the live view public.balances.
func (b *bundle) viewColumnType(column string) string {
	b.t.Helper()
	var typ string
	require.NoError(b.t, b.db.QueryRow(context.Background(), `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = 'public.balances'::regclass AND attname = $1`, column).Scan(&typ))
	return typ
}

// balancesAs reads account -> total with sql.
func (b *bundle) balancesAs(sql string) map[string]int64 {
	b.t.Helper()
	rows, err := b.db.Query(context.Background(), sql)
	require.NoError(b.t, err)
	m := map[string]int64{}
	var k string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error { m[k] = v; return nil })
	require.NoError(b.t, err)
	return m
}
