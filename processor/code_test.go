package processor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// The bank's balances projection as Go code. Version "1" keeps the balance of every account;
// version "2" also counts its events (a changed handler, rolled out as a new replay).

const (
	upsertBalance = `INSERT INTO balances AS b (account_id, total, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at`
	upsertBalanceV2 = `INSERT INTO balances AS b (account_id, total, updated_at, events) VALUES ($1, $2, $3, 1)
		ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at, events = b.events + 1`
)

// amountOf reads the signed amount of a bank event: a deposit adds, a withdrawal subtracts.
func amountOf(ev *projector.Event) (int64, error) {
	var d struct {
		Amount *int64 `json:"amount"`
	}
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		return 0, err
	}
	if d.Amount == nil {
		return 0, errors.New("no amount")
	}
	if ev.Type == "MoneyWithdrawn" {
		return -*d.Amount, nil
	}
	return *d.Amount, nil
}

// bankProjector is the balances projection of bankTopic as Go code, with pipelined or
// transactional handlers (both give the same tables).
func bankProjector(version string, transactional bool) *projector.Projector {
	return bankProjectorNamed("balances", version, transactional)
}

// bankProjectorNamed is bankProjector as projection name, with a table of that name.
func bankProjectorNamed(name, version string, transactional bool) *projector.Projector {
	p := bankProjectorOf(version, transactional, func(sql string) string { return strings.ReplaceAll(sql, "balances", name) })
	p.Name = name
	return p
}

func bankProjectorOf(version string, transactional bool, rename func(string) string) *projector.Projector {
	v2 := version != "1"
	table := "CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL)"
	upsert := upsertBalance
	if v2 {
		table = "CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL, events bigint NOT NULL DEFAULT 0)"
		upsert = upsertBalanceV2
	}
	table, upsert = rename(table), rename(upsert)
	h := projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
		amount, err := amountOf(ev)
		if err != nil {
			return err
		}
		b.Queue(upsert, ev.AggregateID, amount, ev.CreatedAt)
		return nil
	})
	if transactional {
		h = projector.Transactional(func(ctx context.Context, tx pgx.Tx, ev *projector.Event) error {
			amount, err := amountOf(ev)
			if err != nil {
				return err
			}
			// Read, compute in Go, write: what a pipelined handler cannot do.
			var total, events int64
			err = tx.QueryRow(ctx, rename("SELECT total, "+map[bool]string{true: "events", false: "0"}[v2]+" FROM balances WHERE account_id = $1 FOR UPDATE"), ev.AggregateID).Scan(&total, &events)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if v2 {
				_, err = tx.Exec(ctx, rename(`INSERT INTO balances (account_id, total, updated_at, events) VALUES ($1, $2, $3, $4)
					ON CONFLICT (account_id) DO UPDATE SET total = EXCLUDED.total, updated_at = EXCLUDED.updated_at, events = EXCLUDED.events`),
					ev.AggregateID, total+amount, ev.CreatedAt, events+1)
			} else {
				_, err = tx.Exec(ctx, rename(`INSERT INTO balances (account_id, total, updated_at) VALUES ($1, $2, $3)
					ON CONFLICT (account_id) DO UPDATE SET total = EXCLUDED.total, updated_at = EXCLUDED.updated_at`),
					ev.AggregateID, total+amount, ev.CreatedAt)
			}
			return err
		})
	}
	return &projector.Projector{
		Name: "balances", Version: version, Sources: []string{bankTopic},
		Tables:   []string{table},
		Checks:   []string{rename("SELECT count(*) FROM balances"), rename("SELECT coalesce(sum(total), 0) FROM balances")},
		Handlers: map[string]projector.Handler{"MoneyDeposited": h, "MoneyWithdrawn": h},
	}
}

// codeConfig is a config for the bundle's broker and database that declares the bank topic and
// no projection: the projectors come from processor.Options.
func (b *bundle) codeConfig(partitions int32) *topology.Config {
	b.t.Helper()
	cfg, err := topology.Parse(fmt.Appendf(nil, "sources:\n  - topic: %s\n    partitions: %d\n", bankTopic, partitions))
	require.NoError(b.t, err)
	cfg.Kafka.Brokers = b.kafka.Addrs
	cfg.Postgres.URL = b.dbURL
	cfg.HTTP.Listen = "off"
	cfg.Control.StatusInterval = 200 * time.Millisecond
	cfg.Kafka.SessionTimeout = 3 * time.Second
	cfg.Kafka.RebalanceTimeout = 5 * time.Second
	cfg.SetDefaults()
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: logLevel()}))
}

// A Go projector stopped abruptly mid-stream (batches in flight aborted, no offsets committed to
// Kafka), again and again while events keep arriving, loses and duplicates nothing, as SQL
// handlers do: after the last restart the balances equal those computed from the events.
func TestGoProjectorLosesAndDuplicatesNothingThroughAbruptStops(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 8})
	bank := bankgen.New(bankTopic, 8, 300, 17)
	b.kafka.Produce(bank.Events(10000)...)
	cfg := b.codeConfig(8)
	proj := bankProjector("1", false)
	proj.BatchSize = 200
	opts := processor.Options{Projectors: []*projector.Projector{proj}}

	var mu sync.Mutex
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for range 25 {
			mu.Lock()
			recs := bank.Events(400)
			mu.Unlock()
			b.kafka.Produce(recs...)
			time.Sleep(40 * time.Millisecond)
		}
	}()
	applied := func() int64 {
		return b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v1'")
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	midStream := 0
	for i := range 4 {
		o := opts
		o.Logger = testLogger(t)
		p := processor.New(cfg, o)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		<-p.Started()
		before := applied()
		eventually(t, 30*time.Second, func() bool {
			select {
			case <-producing:
				if applied() == b.produced(bankTopic) {
					return true
				}
			default:
			}
			return applied() > before
		}, "run %d applied nothing", i)
		time.Sleep(time.Duration(rnd.IntN(150)) * time.Millisecond)
		processor.Kill(p, cancel)
		select {
		case <-done: //nolint:errcheck // killed
		case <-time.After(30 * time.Second):
			t.Fatalf("kill %d: processor did not stop", i)
		}
		n, produced := applied(), b.produced(bankTopic)
		t.Logf("kill %d: %d of %d events applied", i, n, produced)
		if n > 0 && n < produced {
			midStream++
		}
	}
	require.Positive(t, midStream, "no kill happened mid-stream")
	<-producing
	b.startWith(cfg, opts)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) }, "balances_v1 did not catch up")
	mu.Lock()
	want, total := bank.Balances(), bank.Total()
	mu.Unlock()
	require.Equal(t, want, b.balances("public"))
	require.Equal(t, int64(total), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))
}

// A changed Go projector is rolled out as operators roll out a changed SQL handler: the binary
// registers the new code (version 2) and keeps the live version's (version 1); serve reports the
// drift; a replay of version 2 is created, verified against the live version and promoted; a
// rollback returns to version 1, which kept tailing. A binary without version 1's code does not
// run balances_v1, and says why.
func TestReplayOfAChangedGoProjectorIsVerifiedPromotedAndRolledBack(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 4})
	bank := bankgen.New(bankTopic, 4, 100, 23)
	b.kafka.Produce(bank.Events(3000)...)
	cfg := b.codeConfig(4)
	v1, v2 := bankProjector("1", false), bankProjector("2", false)
	r := b.startWith(cfg, processor.Options{Logger: testLogger(t), Projectors: []*projector.Projector{v1}})
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) }, "v1 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.NoError(t, r.stop())

	// The next binary: version 2 is the projector's code, version 1 is kept for balances_v1.
	r = b.startWith(cfg, processor.Options{Logger: testLogger(t),
		Projectors: []*projector.Projector{v2}, PreviousProjectors: []*projector.Projector{v1}})
	m := r.p.Manager()
	ctx := context.Background()
	st, err := m.VersionStatus(ctx, "balances_v1")
	require.NoError(t, err)
	require.True(t, st.Drift, "the live version runs version 1 of the code, the binary's projector is version 2")
	require.Empty(t, st.Error)

	_, err = m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	b.kafka.Produce(bank.Events(500)...)
	eventually(t, 30*time.Second, func() bool {
		return b.state("balances_v2") == store.StateTailing && b.caughtUp("balances_v2", bankTopic) && b.caughtUp("balances_v1", bankTopic)
	}, "v2 did not catch up")
	v, err := r.p.Store().Version(ctx, "balances_v2")
	require.NoError(t, err)
	require.Equal(t, &topology.Code{Version: "2", EventTypes: []string{"MoneyDeposited", "MoneyWithdrawn"}}, v.Definition.Code)

	rep, err := m.Verify(ctx, "balances_v2")
	require.NoError(t, err)
	require.True(t, rep.Passed, "verify: %+v", rep)
	sw, err := m.Promote(ctx, "balances_v2", control.PromoteOptions{Verified: true, Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, "balances_v1", sw.From)
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, bank.Counts(), b.counts("public"), "the view has version 2's events column")
	st, err = m.VersionStatus(ctx, "balances_v2")
	require.NoError(t, err)
	require.False(t, st.Drift)

	// The retired version keeps tailing with version 1's code; a rollback returns to it.
	b.kafka.Produce(bank.Events(300)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) && b.caughtUp("balances_v2", bankTopic) }, "versions did not catch up")
	sw, err = m.Rollback(ctx, "balances")
	require.NoError(t, err)
	require.Equal(t, "balances_v1", sw.To)
	require.Equal(t, bank.Balances(), b.balances("public"))
	_, err = b.db.Exec(ctx, "SELECT events FROM public.balances LIMIT 1")
	require.Error(t, err, "the view has version 1's shape again")
	_, err = m.Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err)
	require.NoError(t, r.stop())

	// A binary that no longer has version 1's code does not run balances_v1 (retired), and says
	// why in its status; balances_v2 runs on.
	r = b.startWith(cfg, processor.Options{Logger: testLogger(t), Projectors: []*projector.Projector{v2}})
	m = r.p.Manager()
	b.kafka.Produce(bank.Events(200)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v2", bankTopic) }, "v2 did not catch up")
	require.Equal(t, bank.Counts(), b.counts("public"))
	eventually(t, 30*time.Second, func() bool {
		st, err := m.VersionStatus(ctx, "balances_v1")
		return err == nil && st.Error != ""
	}, "balances_v1's status does not say why it does not run")
	st, err = m.VersionStatus(ctx, "balances_v1")
	require.NoError(t, err)
	require.Contains(t, st.Error, "has no code of projector balances version 1 (its binary registers versions: 2)")
	require.Equal(t, "retired", st.State)
	require.Positive(t, st.LagEvents, "it applies nothing")
	require.Zero(t, r.p.Assigned("balances_v1"), "it did not join the version's consumer group")
	_, err = m.Remove(ctx, "balances_v1")
	require.NoError(t, err)
}

// The two handler styles give identical tables: the bank projection with pipelined handlers and
// with transactional ones (read the balance, compute it in Go, write it) replayed side by side.
func TestPipelinedAndTransactionalHandlersGiveIdenticalTables(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 4})
	bank := bankgen.New(bankTopic, 4, 150, 29)
	b.kafka.Produce(bank.Events(4000)...)
	cfg := b.codeConfig(4)
	pipelined, transactional := bankProjectorNamed("balances_p", "2", false), bankProjectorNamed("balances_t", "2", true)
	pipelined.Ordering, transactional.Ordering = topology.OrderingPartition, topology.OrderingGlobal // each style in each order
	b.startWith(cfg, processor.Options{Logger: testLogger(t), Projectors: []*projector.Projector{pipelined, transactional}})
	eventually(t, 60*time.Second, func() bool {
		return b.caughtUp("balances_p_v1", bankTopic) && b.caughtUp("balances_t_v1", bankTopic)
	}, "the versions did not catch up")
	b.kafka.Produce(bank.Events(1000)...)
	eventually(t, 60*time.Second, func() bool {
		return b.caughtUp("balances_p_v1", bankTopic) && b.caughtUp("balances_t_v1", bankTopic)
	}, "the versions did not catch up")
	rows := func(schema string) []string {
		var out []string
		r, err := b.db.Query(context.Background(), "SELECT format('%s %s %s %s', account_id, total, updated_at, events) FROM "+schema+" ORDER BY account_id")
		require.NoError(t, err)
		out, err = pgx.CollectRows(r, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	require.Equal(t, bank.Balances(), storetest.Int64Map(t, b.db, "SELECT account_id, total FROM public.balances_p"))
	require.Equal(t, bank.Counts(), storetest.Int64Map(t, b.db, "SELECT account_id, events FROM public.balances_t"))
	require.Len(t, rows("balances_p_v1.balances_p"), len(bank.Balances()))
	require.Equal(t, rows("balances_p_v1.balances_p"), rows("balances_t_v1.balances_t"))
}

// A Go handler cannot write outside its version's schema: it only ever gets the version's own
// connection, logged in as the version's role. A replay whose handlers write the live view, the
// live version's table (after RESET ROLE) or kreplay's checkpoints fails with the reason, and the
// live rows and checkpoints are unchanged, byte for byte.
func TestAGoHandlerCannotWriteOutsideItsVersion(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 4})
	bank := bankgen.New(bankTopic, 4, 50, 31)
	b.kafka.Produce(bank.Events(1000)...)
	cfg := b.codeConfig(4)
	v1 := bankProjector("1", false)
	r := b.startWith(cfg, processor.Options{Logger: testLogger(t), Projectors: []*projector.Projector{v1}})
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) }, "v1 did not catch up")
	require.NoError(t, r.stop())
	snapshot := func() []string {
		var out []string
		for _, q := range []string{
			"SELECT format('%s', b) FROM balances_v1.balances b ORDER BY account_id",
			"SELECT format('%s', b) FROM public.balances b ORDER BY account_id",
			"SELECT format('%s %s %s %s', version, topic, partition, next_offset) FROM kreplay.checkpoints WHERE version = 'balances_v1' ORDER BY partition",
		} {
			rows, err := b.db.Query(context.Background(), q)
			require.NoError(t, err)
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			out = append(out, got...)
		}
		return out
	}
	before := snapshot()
	require.Len(t, before, 2*len(bank.Balances())+4)

	hostile := map[string]projector.Handler{
		"pipelined, the live view": projector.Pipelined(func(q *projector.Batch, ev *projector.Event) error {
			q.Queue("INSERT INTO public.balances (account_id, total, updated_at) VALUES ($1, 1000000, now()) ON CONFLICT DO NOTHING", ev.AggregateID)
			return nil
		}),
		"transactional, the live version's table after RESET ROLE": projector.Transactional(func(ctx context.Context, tx pgx.Tx, ev *projector.Event) error {
			if _, err := tx.Exec(ctx, "RESET ROLE"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "UPDATE balances_v1.balances SET total = 0")
			return err
		}),
		"transactional, kreplay's checkpoints": projector.Transactional(func(ctx context.Context, tx pgx.Tx, ev *projector.Event) error {
			_, err := tx.Exec(ctx, "UPDATE kreplay.checkpoints SET next_offset = 0")
			return err
		}),
	}
	n := 2
	for what, h := range hostile {
		p := bankProjector(fmt.Sprintf("hostile-%d", n), false)
		p.Handlers["MoneyDeposited"] = h
		p.Handlers["MoneyWithdrawn"] = h
		r := b.startWith(cfg, processor.Options{Logger: testLogger(t), Projectors: []*projector.Projector{p},
			PreviousProjectors: []*projector.Projector{v1}})
		key := fmt.Sprintf("balances_v%d", n)
		_, err := r.p.Manager().Create(context.Background(), lifecycle.CreateRequest{Key: key, Projection: "balances", Start: true})
		require.NoError(t, err, what)
		eventually(t, 60*time.Second, func() bool { return b.state(key) == store.StateFailed }, "%s: %s did not fail", what, key)
		st, err := r.p.Manager().VersionStatus(context.Background(), key)
		require.NoError(t, err)
		require.Contains(t, st.Error, "permission denied", what)
		require.Zero(t, b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = $1", key), what)
		require.NoError(t, r.stop())
		require.Equal(t, before, snapshot(), "%s: the live version changed", what)
		n++
	}
}

// eventIDs are the ids of bank records.
func eventIDs(t *testing.T, recs []*kgo.Record) []string {
	t.Helper()
	ids := make([]string, len(recs))
	for i, r := range recs {
		var ev struct{ ID string }
		require.NoError(t, json.Unmarshal(r.Value, &ev))
		ids[i] = ev.ID
	}
	return ids
}

// reactions counts what a reactor was handed, by event id.
type reactions struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *reactions) reactor(projection string) *projector.Reactor {
	r.n = map[string]int{}
	return &projector.Reactor{Name: "count", Projection: projection, EventTypes: []string{"MoneyDeposited", "MoneyWithdrawn"},
		React: func(_ context.Context, ev *projector.Event) error {
			r.mu.Lock()
			r.n[ev.ID]++
			r.mu.Unlock()
			return nil
		}}
}

func (r *reactions) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.n)
}

// once is the map of ids, each counted once.
func once(ids ...[]string) map[string]int {
	out := map[string]int{}
	for _, l := range ids {
		for _, id := range l {
			out[id] = 1
		}
	}
	return out
}

// A reactor runs exactly once for every event the live version commits, in a process that is not
// killed: never for the history the first version replays at bootstrap, never for what a replay
// applies, and on across a promotion and a rollback with no gap and no repeat, the events that
// arrive meanwhile included.
func TestReactorsReactOnceToLiveEventsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 4})
	bank := bankgen.New(bankTopic, 4, 100, 37)
	b.kafka.Produce(bank.Events(2000)...) // the history
	cfg := b.codeConfig(4)
	var rs reactions
	opts := processor.Options{Logger: testLogger(t), Projectors: []*projector.Projector{bankProjector("2", false)},
		PreviousProjectors: []*projector.Projector{bankProjector("1", false)}, Reactors: []*projector.Reactor{rs.reactor("balances")}}
	v1 := opts
	v1.Projectors, v1.PreviousProjectors = opts.PreviousProjectors, nil
	r := b.startWith(cfg, v1)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) }, "v1 did not catch up")
	produce := func(n int) []string {
		recs := bank.Events(n)
		b.kafka.Produce(recs...)
		return eventIDs(t, recs)
	}
	reacted := func(want map[string]int) {
		t.Helper()
		eventually(t, 30*time.Second, func() bool { return len(rs.counts()) >= len(want) }, "%d of %d events reacted to", len(rs.counts()), len(want))
		time.Sleep(300 * time.Millisecond) // a repeat would come now
		require.Equal(t, want, rs.counts())
	}
	live1 := produce(500)
	reacted(once(live1))
	require.NoError(t, r.stop())

	// A replay of version 2 while events arrive: the reactor sees only what the live version
	// commits.
	r = b.startWith(cfg, opts)
	m := r.p.Manager()
	ctx := context.Background()
	_, err := m.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err)
	live2 := produce(300)
	eventually(t, 30*time.Second, func() bool { return b.state("balances_v2") == store.StateTailing }, "v2 did not catch up")
	reacted(once(live1, live2))

	// Promote and roll back while events arrive.
	var live3 []string
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for range 10 {
			live3 = append(live3, produce(30)...)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err = m.Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err)
	_, err = m.Rollback(ctx, "balances")
	require.NoError(t, err)
	_, err = m.Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err)
	<-producing
	live4 := produce(200)
	reacted(once(live1, live2, live3, live4))
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v2", bankTopic) }, "v2 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, int64(len(rs.counts())), b.scalar("SELECT sum(reacted) FROM kreplay.reactions WHERE projection = 'balances'"))
}

// What is wrong with the projectors and reactors stops Run before it connects anything, each
// problem named.
func TestProjectorOptionsAreValidated(t *testing.T) {
	t.Parallel()
	cfg, err := topology.FromYAML([]byte(bankgen.Config(bankTopic, 4, "global", false)))
	require.NoError(t, err)
	noVersion := bankProjectorNamed("accounts", "1", false)
	noVersion.Version = ""
	err = processor.New(cfg, processor.Options{
		Projectors:         []*projector.Projector{bankProjector("2", false), noVersion},
		PreviousProjectors: []*projector.Projector{bankProjector("2", true)},
		Reactors:           []*projector.Reactor{{Name: "r", Projection: "nope", React: func(context.Context, *projector.Event) error { return nil }}},
	}).Run(context.Background())
	require.Error(t, err)
	for _, want := range []string{
		`projection "balances" is declared both in the config and as a projector; keep one`,
		`projector "balances" version "2" is registered twice`,
		`projection "accounts": code version is empty`,
		`reactor "r": projection "nope" is neither in the config nor a projector`,
	} {
		require.ErrorContains(t, err, want)
	}
}
