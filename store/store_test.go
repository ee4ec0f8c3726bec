package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

const accountsYAML = `sources:
  - topic: bank
projections:
  - name: accounts
    sources: [bank]
    tables:
      - CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL CHECK (total < 1000000))
      - CREATE TABLE owners (account_id text PRIMARY KEY, name text)
      - CREATE TABLE audit (n bigserial PRIMARY KEY, event_id text)
    handlers:
      Deposited: INSERT INTO balances AS b VALUES (@aggregate_id, (@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
      Named: INSERT INTO owners VALUES (@aggregate_id, @data->>'name') ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name
    checks:
      - SELECT count(*) FROM balances
`

func definition(t *testing.T, yaml string) topology.Definition {
	t.Helper()
	cfg, err := topology.Parse([]byte(yaml))
	require.NoError(t, err)
	cfg.SetDefaults()
	def, err := cfg.Definition(cfg.Projections[0].Name)
	require.NoError(t, err)
	return def
}

func open(t *testing.T) (*store.Store, string) {
	t.Helper()
	return storetest.Open(t, store.Config{LockTimeout: 100 * time.Millisecond})
}

func scalar(t *testing.T, s *store.Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, s.Pool().QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	applied, err := s.Migrate(context.Background())
	require.NoError(t, err)
	require.Empty(t, applied, "a second run applies nothing")
	files, err := os.ReadDir("migrations")
	require.NoError(t, err)
	require.Equal(t, int64(len(files)), scalar(t, s, "SELECT count(*) FROM kreplay.schema_migrations"), "each migration once")
}

// A handler naming a missing table or column, or using an argument where PostgreSQL infers a type
// kreplay cannot fill, is refused before anything runs, naming the projection, the event type and
// PostgreSQL's message; nothing is left behind.
func TestValidateDefinitionNamesTheCulprit(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	require.NoError(t, s.ValidateDefinition(ctx, definition(t, accountsYAML)))
	for _, tc := range []struct{ from, to, want string }{
		{"INSERT INTO owners VALUES", "INSERT INTO owner VALUES", `projection "accounts": handler "Named": relation "owner" does not exist`},
		{"SET name = EXCLUDED.name", "SET nom = EXCLUDED.name", `projection "accounts": handler "Named": column "nom" of relation "owners" does not exist`},
		{"INSERT INTO owners VALUES (@aggregate_id,", "INSERT INTO owners VALUES (@version::int4range,", `handler "Named"`},
		{"SELECT count(*) FROM balances", "SELECT count(*) FROM balance", `projection "accounts": checks[0]: relation "balance" does not exist`},
		{"CREATE TABLE owners (", "CREATE TABLE public.owners (", `projection "accounts": tables[1]: permission denied for schema public [SQLSTATE 42501]; a version's statements may use only its own tables`},
		{"CREATE TABLE audit (n bigserial", "CREATE TABLE audit (n bigsrial", `projection "accounts": tables[2]: type "bigsrial" does not exist`},
	} {
		yaml := replaceOnce(t, accountsYAML, tc.from, tc.to)
		err := s.ValidateDefinition(ctx, definition(t, yaml))
		require.ErrorContains(t, err, tc.want, tc.to)
	}

	// Every problem is reported, and only the problems: a refused statement does not make the
	// ones after it fail ("current transaction is aborted").
	yaml := replaceOnce(t, accountsYAML, "INSERT INTO balances AS b", "INSERT INTO balancez AS b")
	yaml = replaceOnce(t, yaml, "SELECT count(*) FROM balances", "SELECT count(*) FROM balance")
	require.EqualError(t, s.ValidateDefinition(ctx, definition(t, yaml)),
		`projection "accounts": handler "Deposited": relation "balancez" does not exist [SQLSTATE 42P01]`+"\n"+
			`projection "accounts": checks[0]: relation "balance" does not exist [SQLSTATE 42P01]`)

	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'kreplay_check_%'"), "scratch schemas are rolled back")
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
}

func replaceOnce(t *testing.T, s, from, to string) string {
	t.Helper()
	require.Contains(t, s, from, "not in the config")
	return strings.Replace(s, from, to, 1)
}

func item(typ, agg string, data string, partition int32, offset int64) store.Item {
	return store.Item{Event: topology.Event{ID: fmt.Sprint(offset), Type: typ, AggregateID: agg, Data: []byte(data),
		Topic: "bank", Partition: partition, Offset: offset, CreatedAt: time.Unix(0, 0)}, Next: offset + 1}
}

// started creates and starts a version at offset 0 of two partitions (targets 100).
func started(t *testing.T, s *store.Store, key string, live bool) {
	t.Helper()
	_, err := s.CreateVersion(context.Background(), store.NewVersion{Key: key, Definition: definition(t, accountsYAML), Live: live,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 100}, {Topic: "bank", Partition: 1, Target: 100}}})
	require.NoError(t, err)
}

// liveAndTailing creates accounts_v1, live, and accounts_v2, tailing: ready to be promoted.
func liveAndTailing(t *testing.T, s *store.Store) {
	t.Helper()
	started(t, s, "accounts_v1", true)
	started(t, s, "accounts_v2", false)
	tailing(t, s, "accounts_v2")
}

// tailing marks a version tailing, as a replay that reached its start watermarks is.
func tailing(t *testing.T, s *store.Store, key string) {
	t.Helper()
	_, err := s.Pool().Exec(context.Background(), "UPDATE kreplay.versions SET state = 'tailing' WHERE key = $1", key)
	require.NoError(t, err)
}

// A batch is one transaction with its checkpoints: a handler refused by PostgreSQL rolls back the
// statements before it and the checkpoints, and says which event it was; a stale generation is
// fenced and writes nothing.
func TestApplyIsAtomicAndFenced(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	tps := []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}
	_, err := s.Claim(ctx, "accounts_v1", 3, "member-a", tps, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer a.Close(ctx)

	res, err := a.Apply(ctx, 3, []store.Item{
		item("Deposited", "x", `{"amount": 10}`, 0, 0),
		item("Named", "x", `{"name": "Ada"}`, 1, 0),
		item("Unhandled", "x", `{}`, 0, 1),
	})
	require.NoError(t, err)
	require.Equal(t, 2, res.Handled)
	require.Equal(t, store.StateLive, res.State)

	_, err = a.Apply(ctx, 3, []store.Item{
		item("Deposited", "x", `{"amount": 5}`, 0, 2),
		item("Deposited", "y", `{"amount": 9999999}`, 1, 1), // violates the CHECK
		item("Deposited", "z", `{"amount": 1}`, 0, 3),
	})
	var herr *store.HandlerError
	require.ErrorAs(t, err, &herr)
	require.Equal(t, 1, herr.Index)
	require.ErrorContains(t, err, "balances_total_check")
	require.Equal(t, int64(10), scalar(t, s, "SELECT total FROM accounts_v1.balances WHERE account_id = 'x'"), "rolled back")
	cps, err := s.Checkpoints(ctx, "accounts_v1")
	require.NoError(t, err)
	require.Equal(t, []int64{2, 1}, []int64{cps[0].NextOffset, cps[1].NextOffset})
	require.Equal(t, int64(3), cps[0].Applied+cps[1].Applied)

	// Another member claims the partitions with a newer generation: the old one is fenced.
	_, err = s.Claim(ctx, "accounts_v1", 4, "member-b", tps, false)
	require.NoError(t, err)
	_, err = a.Apply(ctx, 3, []store.Item{item("Deposited", "x", `{"amount": 5}`, 0, 2)})
	require.ErrorIs(t, err, store.ErrFenced)
	require.Equal(t, int64(10), scalar(t, s, "SELECT total FROM accounts_v1.balances WHERE account_id = 'x'"))
	// A late claim by the older generation is refused too.
	_, err = s.Claim(ctx, "accounts_v1", 3, "member-a", tps, false)
	require.ErrorIs(t, err, store.ErrFenced)

	// A version that stopped running writes nothing either.
	started(t, s, "accounts_v2", false)
	_, err = s.Claim(ctx, "accounts_v2", 1, "m", tps, false)
	require.NoError(t, err)
	_, err = s.PauseVersion(ctx, "accounts_v2")
	require.NoError(t, err)
	b, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v2", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer b.Close(ctx)
	_, err = b.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 5}`, 0, 0)})
	require.ErrorIs(t, err, store.ErrNotRunning)
}

// A batch that failed because its connection was terminated is sent again on a new connection,
// and applies once. (pgx remembers in a queued query the statement it was prepared as on the old
// connection: resent as is, it fails with "prepared statement does not exist" for good.)
func TestARetriedBatchSurvivesATerminatedConnection(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	tps := []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}
	_, err := s.Claim(ctx, "accounts_v1", 1, "member-a", tps, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer a.Close(ctx)
	_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 10}`, 0, 0)})
	require.NoError(t, err)

	p := a.NewPrepared()
	a.Prepare(p, 1, []store.Item{item("Deposited", "x", `{"amount": 5}`, 0, 1), item("Deposited", "y", `{"amount": 7}`, 1, 0)})
	require.Equal(t, int64(1), scalar(t, s, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'kreplay:accounts_v1'`))
	_, err = a.Execute(ctx, p)
	require.Error(t, err)
	require.True(t, store.IsTransient(err), "a terminated connection is transient: %v", err)
	_, err = a.Execute(ctx, p) // as the lane does after its backoff
	require.NoError(t, err)
	_, err = a.Execute(ctx, p) // and again, as if the commit's acknowledgement had been lost
	require.ErrorIs(t, err, store.ErrAlreadyApplied)
	require.Equal(t, int64(15), scalar(t, s, "SELECT total FROM accounts_v1.balances WHERE account_id = 'x'"))
	require.Equal(t, int64(7), scalar(t, s, "SELECT total FROM accounts_v1.balances WHERE account_id = 'y'"))
	require.Equal(t, int64(3), scalar(t, s, "SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'accounts_v1'"))
}

// The version reaching its start watermarks flips to tailing in the batch that reaches them,
// also when several appliers (ordering: partition) commit their last batches concurrently.
func TestParallelAppliersFlipToTailingOnce(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	for round := range 5 {
		key := fmt.Sprintf("accounts_v%d", round+2)
		_, err := s.CreateVersion(ctx, store.NewVersion{Key: key, Definition: definition(t, accountsYAML),
			Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 1}, {Topic: "bank", Partition: 1, Target: 1}}})
		require.NoError(t, err)
		tps := []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}
		_, err = s.Claim(ctx, key, 1, "m", tps, false)
		require.NoError(t, err)
		errs := make(chan error, 2)
		for p := range int32(2) {
			go func() {
				a, err := s.NewApplier(store.ApplierConfig{Key: key, Definition: definition(t, accountsYAML)})
				if err != nil {
					errs <- err
					return
				}
				defer a.Close(ctx)
				_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 1}`, p, 0)})
				errs <- err
			}()
		}
		require.NoError(t, <-errs)
		require.NoError(t, <-errs)
		v, err := s.Version(ctx, key)
		require.NoError(t, err)
		require.Equal(t, store.StateTailing, v.State, "round %d", round)
	}
}

// A swap interrupted at any point (its transaction rolled back by a canceled context, as by a
// crash) leaves the views all pointing at the live version the catalog names, never a mix.
func TestAnInterruptedSwapLeavesOneVersionLive(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	liveAndTailing(t, s)
	// Budgets from 0 to twice what a whole promote and rollback take on this machine now, so that
	// the swaps are cut at every point whatever the machine's load.
	began := time.Now()
	_, err := s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.NoError(t, err)
	_, err = s.Swap(ctx, "accounts_v1", store.SwapRollback, []store.State{store.StateRetired}, store.SwapOptions{})
	require.NoError(t, err)
	budget := max(time.Since(began), 10*time.Millisecond)
	rnd := rand.New(rand.NewPCG(5, 6))
	completed := 0
	for range 60 {
		v, err := s.Projection(ctx, "accounts")
		require.NoError(t, err)
		next, kind, from := "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}
		if v.Live == "accounts_v2" {
			next, kind, from = "accounts_v1", store.SwapRollback, []store.State{store.StateRetired}
		}
		if v.Live == "accounts_v1" && v.Previous == "accounts_v2" {
			kind, from = store.SwapRollback, []store.State{store.StateRetired}
		}
		cctx, cancel := context.WithTimeout(ctx, time.Duration(rnd.Int64N(int64(budget))))
		_, swapErr := s.Swap(cctx, next, kind, from, store.SwapOptions{})
		cancel()
		if swapErr == nil {
			completed++
		} else {
			require.True(t, errors.Is(swapErr, context.DeadlineExceeded) || errors.Is(swapErr, context.Canceled) ||
				strings.Contains(swapErr.Error(), "gave up") || strings.Contains(swapErr.Error(), "canceling statement") ||
				strings.Contains(swapErr.Error(), "conn closed") || strings.Contains(swapErr.Error(), "timeout") ||
				strings.Contains(swapErr.Error(), "is already the live version") || strings.Contains(swapErr.Error(), "it is live"), "%v", swapErr)
		}
		// In one snapshot (an interrupted swap may still be committing: its client gave up after
		// sending COMMIT): the live version, its state, and what every view points at.
		var live, state string
		var targets [][]string
		err = pgx.BeginTxFunc(ctx, s.Pool(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT p.live_version, v.state FROM kreplay.projections p JOIN kreplay.versions v ON v.key = p.live_version
				WHERE p.name = 'accounts'`).Scan(&live, &state); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT array_agg(DISTINCT n.nspname ORDER BY n.nspname) FROM pg_class vw
				JOIN pg_namespace vn ON vn.oid = vw.relnamespace AND vn.nspname = 'public'
				JOIN pg_rewrite r ON r.ev_class = vw.oid
				JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
				JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE vw.relkind = 'v' AND n.nspname <> 'kreplay' GROUP BY vw.relname ORDER BY vw.relname`)
			if err != nil {
				return err
			}
			targets, err = pgx.CollectRows(rows, pgx.RowTo[[]string])
			return err
		})
		require.NoError(t, err)
		require.Equal(t, "live", state, "the live version's state (swap error: %v)", swapErr)
		// The first swap repoints the views and routes them over both versions (same shape);
		// after it, swaps only change live_version, which the views' branches are filtered on.
		require.Len(t, targets, 3, "the views of balances, owners, audit")
		for _, branches := range targets {
			require.Contains(t, branches, live, "the views of balances, owners, audit read the live version (swap error: %v)", swapErr)
		}
	}
	t.Logf("%d of 60 swaps completed, the others were interrupted", completed)
	require.Positive(t, completed)
	require.Less(t, completed, 60)
}

// viewTarget is the schema a live view selects from.
func viewTarget(t *testing.T, s *store.Store, view string) string {
	t.Helper()
	var schema string
	require.NoError(t, s.Pool().QueryRow(context.Background(), `SELECT DISTINCT n.nspname FROM pg_rewrite r
		JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
		JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE r.ev_class = ('public.' || $1)::regclass`, view).Scan(&schema))
	return schema
}

// Two projections cannot expose the same table name in the live schema.
func TestProjectionsCannotShareALiveView(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	other := replaceOnce(t, accountsYAML, "name: accounts", "name: ledgers")
	_, err := s.CreateVersion(ctx, store.NewVersion{Key: "ledgers_v1", Definition: definition(t, other), Live: true,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 0}}})
	require.ErrorContains(t, err, `projection "ledgers" cannot expose table "audit" in the live schema "public": projection "accounts" already does`)
	require.Equal(t, "accounts_v1", viewTarget(t, s, "balances"))
	require.Equal(t, int64(0), scalar(t, s, "SELECT count(*) FROM pg_namespace WHERE nspname = 'ledgers_v1'"), "nothing was created")
}

const foldYAML = `sources:
  - topic: bank
projections:
  - name: folded
    sources: [bank]
    tables:
      - CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL, low bigint, high bigint, last_event text, updated_at timestamptz)
    folds:
      - table: balances
        events: [Deposited, Withdrawn]
        key: {account_id: "@aggregate_id"}
        columns:
          total: {sum: "CASE @type WHEN 'Deposited' THEN (@data->>'amount')::bigint ELSE -(@data->>'amount')::bigint END"}
          events: {count: true}
          low: {min: "(@data->>'amount')::bigint"}
          high: {max: "(@data->>'amount')::bigint"}
          last_event: {last: "@event_id"}
          updated_at: {last: "@created_at"}
`

// A fold applies a batch with one statement and gives exactly what applying its events one by
// one gives: sums and counts add up, min/max keep the extremes, last keeps the last event's
// value, across batches; an event its statement refuses is pinpointed.
func TestFoldsAreExact(t *testing.T) {
	t.Parallel()
	for name, yaml := range map[string]string{
		"a bare key (last flagged by kreplay)":       foldYAML,
		"a computed key (last by ordered aggregate)": replaceOnce(t, foldYAML, `key: {account_id: "@aggregate_id"}`, `key: {account_id: "lower(@aggregate_id)"}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testFold(t, yaml)
		})
	}
}

func testFold(t *testing.T, yaml string) {
	s, _ := open(t)
	ctx := context.Background()
	def := definition(t, yaml)
	require.NoError(t, s.ValidateDefinition(ctx, def))
	_, err := s.CreateVersion(ctx, store.NewVersion{Key: "folded_v1", Definition: def, Live: true,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 0}}})
	require.NoError(t, err)
	tps := []store.TopicPartition{{Topic: "bank", Partition: 0}}
	_, err = s.Claim(ctx, "folded_v1", 1, "m", tps, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "folded_v1", Definition: def})
	require.NoError(t, err)
	defer a.Close(ctx)

	type acct struct{ total, events, low, high int64 }
	want := map[string]*acct{}
	last := map[string]string{}
	rnd := rand.New(rand.NewPCG(9, 9))
	off := int64(0)
	for range 7 {
		var items []store.Item
		for range 1 + rnd.IntN(300) {
			id := fmt.Sprintf("a%d", rnd.IntN(20))
			amount := int64(1 + rnd.IntN(1000))
			typ := "Deposited"
			if rnd.IntN(3) == 0 {
				typ = "Withdrawn"
			}
			it := item(typ, id, fmt.Sprintf(`{"amount": %d}`, amount), 0, off)
			items = append(items, it)
			off++
			w := want[id]
			if w == nil {
				w = &acct{low: amount, high: amount}
				want[id] = w
			}
			if typ == "Deposited" {
				w.total += amount
			} else {
				w.total -= amount
			}
			w.events++
			w.low, w.high = min(w.low, amount), max(w.high, amount)
			last[id] = it.Event.ID
		}
		res, err := a.Apply(ctx, 1, items)
		require.NoError(t, err)
		require.Equal(t, len(items), res.Handled)
	}
	rows, err := s.Pool().Query(ctx, "SELECT account_id, total, events, low, high, last_event FROM folded_v1.balances")
	require.NoError(t, err)
	got := map[string]*acct{}
	gotLast := map[string]string{}
	for rows.Next() {
		var id, le string
		var g acct
		require.NoError(t, rows.Scan(&id, &g.total, &g.events, &g.low, &g.high, &le))
		got[id], gotLast[id] = &g, le
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got)
	require.Equal(t, last, gotLast)

	// A poison event in a folded batch is found.
	_, err = a.Apply(ctx, 1, []store.Item{
		item("Deposited", "a1", `{"amount": 1}`, 0, off),
		item("Deposited", "a2", `{"amount": "lots"}`, 0, off+1),
		item("Deposited", "a3", `{"amount": 1}`, 0, off+2),
	})
	var herr *store.HandlerError
	require.ErrorAs(t, err, &herr)
	require.Equal(t, 1, herr.Index)
	require.ErrorContains(t, err, `invalid input syntax for type bigint: "lots"`)

	bad := replaceOnce(t, yaml, "key: {account_id:", "key: {acount_id:")
	require.ErrorContains(t, s.ValidateDefinition(ctx, definition(t, bad)), `projection "folded": fold "balances": column "acount_id" of relation "balances" does not exist`)
}
