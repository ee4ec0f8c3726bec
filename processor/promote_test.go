package processor_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// ledgerConfig: one partition (so the applied order is the log order) of deposits; the totals
// table counts events and sums amounts in the same statement that updates the balance. v2 adds
// a column to balances (another shape).
func ledgerConfig(v2 bool) string {
	col, val, set := "", "", ""
	if v2 {
		col, val, set = ", events bigint NOT NULL DEFAULT 1", ", 1", ", events = b.events + 1"
	}
	return fmt.Sprintf(`sources:
  - topic: ledger
    partitions: 1
projections:
  - name: ledger
    sources: [ledger]
    tables:
      - CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL%[1]s)
      - CREATE TABLE totals (id int PRIMARY KEY, n bigint NOT NULL, s bigint NOT NULL)
    handlers:
      MoneyDeposited: |
        WITH t AS (INSERT INTO totals AS x VALUES (1, 1, (@data->>'amount')::bigint)
                   ON CONFLICT (id) DO UPDATE SET n = x.n + 1, s = x.s + EXCLUDED.s)
        INSERT INTO balances AS b (account_id, total%[2]s) VALUES (@aggregate_id, (@data->>'amount')::bigint%[3]s)
        ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total%[4]s
    checks:
      - SELECT n, s FROM totals
      - SELECT count(*), sum(total) FROM balances
`, col, ifElse(col != "", ", events"), val, set)
}

func ifElse(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}

// ledger produces n deposits of amount offset+1 (so the sum of the first k events is k(k+1)/2).
type ledger struct {
	k    *kafkatest.Cluster
	mu   sync.Mutex
	next int64
}

func (l *ledger) produce(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		l.next++
		recs[i] = bankgen.Record("ledger", 0, bankgen.Event{ID: fmt.Sprint(l.next), Type: "MoneyDeposited",
			AggregateID: fmt.Sprintf("a%03d", l.next%97), Version: l.next, CreatedAt: time.Unix(1767225600, 0).Add(time.Duration(l.next) * time.Millisecond),
			Data: map[string]int64{"amount": l.next}})
	}
	l.k.Produce(recs...)
}

func (l *ledger) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// readerStats is what a reader saw.
type readerStats struct {
	reads, errors int64
	lat           []time.Duration
	mu            sync.Mutex
	firstErr      error
}

func (s *readerStats) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

// read runs the reader loop until ctx ends: each read must be a consistent state of one version
// (sum of balances = s, and s the sum of the first n events) and never older than the previous
// one (n never decreases). tx: the two reads in one REPEATABLE READ transaction; else one
// statement.
func read(ctx context.Context, db *pgx.Conn, tx bool, st *readerStats) {
	var lastN int64
	for ctx.Err() == nil {
		start := time.Now()
		var sum, n, s int64
		var err error
		if tx {
			err = pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(t pgx.Tx) error {
				if err := t.QueryRow(ctx, "SELECT coalesce(sum(total), 0) FROM public.balances").Scan(&sum); err != nil {
					return err
				}
				return t.QueryRow(ctx, "SELECT coalesce((SELECT n FROM public.totals), 0), coalesce((SELECT s FROM public.totals), 0)").Scan(&n, &s)
			})
		} else {
			err = db.QueryRow(ctx, `SELECT (SELECT coalesce(sum(total), 0) FROM public.balances),
				coalesce((SELECT n FROM public.totals), 0), coalesce((SELECT s FROM public.totals), 0)`).Scan(&sum, &n, &s)
		}
		if ctx.Err() != nil {
			return
		}
		lat := time.Since(start)
		switch {
		case err != nil:
			st.fail(err)
		case sum != s || s != n*(n+1)/2:
			st.fail(fmt.Errorf("inconsistent read: sum(balances)=%d, totals n=%d s=%d (want s=%d)", sum, n, s, n*(n+1)/2))
		case n < lastN:
			st.fail(fmt.Errorf("went back in time: n=%d after n=%d", n, lastN))
		default:
			lastN = n
			st.mu.Lock()
			st.reads++
			st.lat = append(st.lat, lat)
			st.mu.Unlock()
		}
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// Promotion is zero-downtime: readers querying the live views in a tight loop (single statements
// and multi-statement REPEATABLE READ transactions) while promote and rollback switch the views
// back and forth, and events keep arriving, never see an error, never a state that mixes versions
// or is not a prefix of the log, and never a state older than one they saw.
func TestPromotionAndRollbackAreInvisibleToReaders(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"ledger": 1})
	l := &ledger{k: b.kafka}
	l.produce(3000)
	r := b.start(b.config(ledgerConfig(false)))
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("ledger_v1", "ledger") }, "v1 did not catch up")
	require.NoError(t, r.stop())
	r = b.start(b.config(ledgerConfig(true)))
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "ledger_v2", Projection: "ledger", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.state("ledger_v2") == store.StateTailing }, "v2 did not reach tailing")

	rctx, stopReaders := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stats := make([]*readerStats, 6)
	for i := range stats {
		stats[i] = &readerStats{}
		conn := connect(t, b.dbURL)
		wg.Go(func() { read(rctx, conn, i%2 == 1, stats[i]) })
	}
	var producing atomic.Bool
	producing.Store(true)
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for producing.Load() { // 1,000 events/s: both versions keep up on a loaded 2-core machine
			l.produce(20)
			time.Sleep(20 * time.Millisecond)
		}
	}()

	time.Sleep(200 * time.Millisecond)
	rep, err := m.Promote(ctx, "ledger_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second), MaxLag: 1000})
	require.NoError(t, err)
	require.Equal(t, "ledger_v1", rep.From)
	swaps := []float64{rep.SwapDurationMS}
	for range 9 {
		time.Sleep(100 * time.Millisecond)
		rep, err := m.Rollback(ctx, "ledger")
		require.NoError(t, err)
		swaps = append(swaps, rep.SwapDurationMS)
	}
	time.Sleep(200 * time.Millisecond)
	producing.Store(false)
	<-prodDone
	stopReaders()
	wg.Wait()

	var all []time.Duration
	var reads int64
	for i, s := range stats {
		require.Zero(t, s.errors, "reader %d: %v", i, s.firstErr)
		reads += s.reads
		all = append(all, s.lat...)
	}
	require.Positive(t, reads)
	t.Logf("%d reads during 10 swaps (swap ms %v): reader latency p50 %s, p99 %s, max %s",
		reads, swaps, percentile(all, 0.5), percentile(all, 0.99), percentile(all, 1))

	// After an odd number of rollbacks v1 is live again, with exact values, and v2 retired.
	total := l.total()
	for _, key := range []string{"ledger_v1", "ledger_v2"} {
		eventually(t, 30*time.Second, func() bool { return b.caughtUp(key, "ledger") }, "%s did not catch up", key)
	}
	require.Equal(t, store.StateLive, b.state("ledger_v1"))
	require.Equal(t, store.StateRetired, b.state("ledger_v2"))
	require.Equal(t, total*(total+1)/2, b.scalar("SELECT s FROM public.totals"))
	require.Equal(t, total, b.scalar("SELECT n FROM public.totals"))
	require.Equal(t, int64(11), b.scalar("SELECT count(*) FROM kreplay.promotions WHERE projection = 'ledger'"))
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}
