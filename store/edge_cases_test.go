package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// openWithReader opens a store whose views are granted to a reader role of the test's own (roles
// are shared by the server's databases; CREATE ROLE fails harmlessly when it exists).
func openWithReader(t *testing.T, role string) *store.Store {
	t.Helper()
	ctx := context.Background()
	// Registered before the database's cleanup, so it runs after it: the role's grants go with the
	// database, and then the role can go too (roles are the server's, and would outlive the test).
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, storetest.ServerURL())
		if err != nil {
			t.Errorf("drop role %s: %v", role, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	s, _ := storetest.Open(t, store.Config{LockTimeout: 100 * time.Millisecond, ReaderRole: role})
	_, _ = s.Pool().Exec(ctx, "CREATE ROLE "+role+" NOLOGIN")
	return s
}

// grantInFlight begins, in another transaction, the GRANT USAGE ON SCHEMA public that another
// swap or bootstrap (another projection, another instance) runs, and commits it after delay. The
// returned channel yields the commit's error.
func grantInFlight(t *testing.T, s *store.Store, role string, delay time.Duration) <-chan error {
	t.Helper()
	ctx := context.Background()
	other, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	_, err = other.Exec(ctx, "GRANT USAGE ON SCHEMA public TO "+role)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		time.Sleep(delay)
		done <- other.Commit(ctx)
	}()
	return done
}

// With a reader role, two swaps in flight at once (two projections, or two instances) both grant
// the role usage on the live schema. The one that waits used to fail at once with "canceling
// statement due to lock timeout" or "tuple concurrently updated" (the swap's error had lost
// PostgreSQL's SQLSTATE, so it was not retried); it now retries until the other commits.
func TestSwapRetriesAConcurrentSchemaGrant(t *testing.T) {
	t.Parallel()
	const role = "kreplay_test_reader_swap"
	s := openWithReader(t, role)
	ctx := context.Background()
	liveAndTailing(t, s)

	committed := grantInFlight(t, s, role, 300*time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := s.Swap(sctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.NoError(t, <-committed)
	require.NoError(t, err, "Swap retries conflicts with concurrent transactions until its context ends")
	require.Greater(t, res.Attempts, 1, "the first attempt waited for the other grant")
	require.Equal(t, "accounts_v2", res.To)
	var readable bool
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT has_table_privilege($1, 'public.balances', 'SELECT')", role).Scan(&readable))
	require.True(t, readable)
}

// Bootstrapping a projection's first version with a reader role while another transaction grants
// the role usage on the live schema used to fail with "tuple concurrently updated", which made
// the instance exit at startup; CreateVersion now runs its transaction again.
func TestCreateLiveVersionRetriesAConcurrentSchemaGrant(t *testing.T) {
	t.Parallel()
	const role = "kreplay_test_reader_create"
	s := openWithReader(t, role)
	ctx := context.Background()

	committed := grantInFlight(t, s, role, 300*time.Millisecond)
	v, err := s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v1", Definition: definition(t, accountsYAML), Live: true,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 0}}})
	require.NoError(t, <-committed)
	require.NoError(t, err)
	require.Equal(t, store.StateLive, v.State)
	proj, err := s.Projection(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, "accounts_v1", proj.Live)
	require.Equal(t, int64(1), scalar(t, s, "SELECT count(*) FROM kreplay.promotions"), "one bootstrap recorded, not one per attempt")
}

// A view statement PostgreSQL refuses during a swap still reads as before (what it was for, then
// PostgreSQL's message and SQLSTATE), and errors.As finds PostgreSQL's error in it.
func TestSwapErrorKeepsThePostgresError(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	liveAndTailing(t, s)
	// A view of the user's depends on the live view, which then cannot be dropped to change shape.
	_, err := s.Pool().Exec(ctx, `CREATE VIEW public.rich AS SELECT * FROM public.owners;
		ALTER TABLE accounts_v2.owners ALTER COLUMN name TYPE varchar(20)`)
	require.NoError(t, err)
	_, err = s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{AllowShapeChange: true})
	require.ErrorContains(t, err, "drop view public.owners to change its shape: cannot drop view owners because other objects depend on it")
	require.ErrorContains(t, err, "[SQLSTATE 2BP01]")
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%v", err)
	require.Equal(t, "2BP01", pgErr.Code)
}

// v1AppliedAPartitionV2Lacks creates accounts_v1 (live, partitions 0 and 1) and accounts_v2 (tailing, started
// before partition 1 existed: no checkpoint for it), and makes accounts_v1 apply a deposit to
// account x at bank[1] offset 0.
func v1AppliedAPartitionV2Lacks(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	_, err := s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v2", Definition: definition(t, accountsYAML),
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 0}}})
	require.NoError(t, err)
	tailing(t, s, "accounts_v2")
	_, err = s.Claim(ctx, "accounts_v1", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer a.Close(ctx)
	_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 10}`, 1, 0)})
	require.NoError(t, err)
}

// A partition the live version applied but the new one has no checkpoint for (added to the topic
// after the new version started, not claimed yet) used to be skipped by the swap's "not behind"
// check: promote went through and readers lost what the live version had applied there (here,
// account x). A missing checkpoint is offset 0, so the swap now waits for the new version.
func TestSwapRefusesANewVersionWithoutAPartitionTheLiveOneApplied(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	v1AppliedAPartitionV2Lacks(t, s)
	// A source the new version does not consume (dropped from its definition) is not waited for.
	_, err := s.Pool().Exec(ctx, `INSERT INTO kreplay.checkpoints (version, topic, partition, next_offset, start_offset, target_offset)
		VALUES ('accounts_v1', 'legacy', 0, 5, 0, 5)`)
	require.NoError(t, err)

	// Swap retries while the new version is behind, until its context ends.
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = s.Swap(sctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.ErrorIs(t, err, store.ErrBehind)
	require.ErrorContains(t, err, "(bank[1]: 0 < 1)")
	proj, err := s.Projection(ctx, "accounts")
	require.NoError(t, err)
	require.Equal(t, "accounts_v1", proj.Live)

	// Once accounts_v2 claims the partition and applies the same event, the swap goes through.
	_, err = s.Claim(ctx, "accounts_v2", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v2", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer a.Close(ctx)
	_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 10}`, 1, 0)})
	require.NoError(t, err)
	res, err := s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.NoError(t, err)
	require.Equal(t, "accounts_v1", res.From)
	require.Equal(t, int64(10), scalar(t, s, "SELECT total FROM public.balances WHERE account_id = 'x'"))
}

// verify used to compare two versions while one of them had no checkpoint for a partition the
// other had applied, reporting differences (or a pass) at offsets that were not the same. The
// missing checkpoint is offset 0, so Compare refuses with ErrNotAligned.
func TestCompareRefusesAPartitionOnlyOneVersionApplied(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	v1AppliedAPartitionV2Lacks(t, s)
	_, err := s.Compare(ctx, "accounts_v1", "accounts_v2", nil)
	require.ErrorIs(t, err, store.ErrNotAligned)
	require.ErrorContains(t, err, "bank[1] 1 != 0")

	// Checkpoints of a topic only one of them consumes do not count.
	_, err = s.Pool().Exec(ctx, `DELETE FROM kreplay.checkpoints WHERE version = 'accounts_v1' AND partition = 1;
		INSERT INTO kreplay.checkpoints (version, topic, partition, next_offset, start_offset, target_offset)
		VALUES ('accounts_v1', 'legacy', 0, 5, 0, 5)`)
	require.NoError(t, err)
	cmp, err := s.Compare(ctx, "accounts_v1", "accounts_v2", nil)
	require.NoError(t, err)
	require.Equal(t, store.Hold{"bank": {0: 0}}, cmp.Offsets)
}

// A new version that only changes a column's collation could never be promoted: the swap chose
// CREATE OR REPLACE VIEW, which PostgreSQL refuses ("cannot change collation of view column"),
// on every retry. The view is now dropped and created again in the swap's transaction, with its
// grants, as for other changes of shape.
func TestPromoteChangesAColumnsCollation(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	_, err := s.Pool().Exec(ctx, "GRANT SELECT ON public.owners TO PUBLIC")
	require.NoError(t, err)
	def2 := definition(t, replaceOnce(t, accountsYAML, "owners (account_id text PRIMARY KEY, name text)", `owners (account_id text PRIMARY KEY, name text COLLATE "C")`))
	_, err = s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v2", Definition: def2,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 0}, {Topic: "bank", Partition: 1, Target: 0}}})
	require.NoError(t, err)
	tailing(t, s, "accounts_v2")

	// A new collation is a retype: refused without AllowShapeChange, naming the column.
	_, err = s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	var serr *store.ShapeChangeError
	require.ErrorAs(t, err, &serr)
	require.ErrorIs(t, err, store.ErrShapeChange)
	require.Equal(t, []store.ShapeChange{{View: "public.owners", Retyped: []store.ColumnRetype{{Name: "name", From: "text", To: `text COLLATE "C"`}}}}, serr.Changes)
	res, err := s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{AllowShapeChange: true})
	require.NoError(t, err)
	require.Equal(t, serr.Changes, res.ShapeChanges)
	var collation string
	require.NoError(t, s.Pool().QueryRow(ctx, `SELECT coll.collname FROM pg_attribute a JOIN pg_collation coll ON coll.oid = a.attcollation
		WHERE a.attrelid = 'public.owners'::regclass AND a.attname = 'name'`).Scan(&collation))
	require.Equal(t, "C", collation)
	require.Equal(t, int64(1), scalar(t, s, `SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.oid = 'public.owners'::regclass AND a.grantee = 0 AND a.privilege_type = 'SELECT'`), "the grant to PUBLIC is kept")
}

// A handler PostgreSQL refuses to prepare (here its table was dropped under it) on an applier's
// new connection used to be reported as "apply accounts_v1: checkpoint: error preprocessing batch
// (prepare): ...", naming neither the handler nor the event; on a connection that had prepared
// it before, the same fault was reported otherwise. Both now name the handler's event type and
// PostgreSQL's message. A table dropped under a handler is the environment's fault, not the
// event's: it is not a *HandlerError (on_error does not apply; the version retries).
func TestApplyBlamesAHandlerThatFailsToPrepare(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	_, err := s.Claim(ctx, "accounts_v1", 1, "m", []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}, false)
	require.NoError(t, err)
	warm, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer warm.Close(ctx)
	_, err = warm.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{"amount": 1}`, 0, 0), item("Named", "x", `{"name": "a"}`, 0, 1)})
	require.NoError(t, err)

	_, err = s.Pool().Exec(ctx, "DROP VIEW public.owners; DROP TABLE accounts_v1.owners")
	require.NoError(t, err)
	fresh, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: definition(t, accountsYAML)})
	require.NoError(t, err)
	defer fresh.Close(ctx)
	batch := []store.Item{
		item("Deposited", "x", `{"amount": 1}`, 0, 2),
		item("Named", "x", `{"name": "b"}`, 0, 3),
		item("Named", "x", `{"name": "c"}`, 0, 4),
	}
	for _, tc := range []struct {
		name string
		a    *store.Applier
	}{{"fresh connection", fresh}, {"warm connection", warm}} {
		_, err := tc.a.Apply(ctx, 1, batch)
		var herr *store.HandlerError
		require.False(t, errors.As(err, &herr), "%s: %v", tc.name, err)
		require.False(t, store.IsPoison(err), tc.name)
		require.EqualError(t, err, `apply accounts_v1: handler "Named": relation "owners" does not exist [SQLSTATE 42P01]`, tc.name)
	}
	require.Equal(t, int64(2), scalar(t, s, "SELECT next_offset FROM kreplay.checkpoints WHERE version = 'accounts_v1' AND partition = 0"),
		"nothing of the refused batches was written")
}

// A check ending in a comment or a semicolon passed validation, but verify, which runs each check
// inside a subquery, always failed on it with a syntax error. Such checks now run as written.
func TestCompareRunsChecksEndingInACommentOrSemicolon(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	checks := []string{
		"SELECT count(*) AS n FROM balances -- accounts",
		"SELECT count(*) AS n FROM balances;",
		"SELECT count(*) AS n FROM balances; -- accounts",
		"SELECT count(*) AS n FROM owners /* names */ ;\n",
		"SELECT '--;' AS s -- a literal that looks like a comment",
	}
	def := definition(t, accountsYAML)
	def.Checks = checks
	require.NoError(t, s.ValidateDefinition(ctx, def))
	started(t, s, "accounts_v1", true)
	started(t, s, "accounts_v2", false)
	cmp, err := s.Compare(ctx, "accounts_v1", "accounts_v2", checks)
	require.NoError(t, err)
	require.True(t, cmp.Passed)
	var got []string
	for _, r := range cmp.Results {
		if r.Kind == "check" {
			got = append(got, r.A)
		}
	}
	require.Equal(t, []string{`{"n": 0}`, `{"n": 0}`, `{"n": 0}`, `{"n": 0}`, `{"s": "--;"}`}, got)
}

// What verify cannot compare is reported, not left out without a word: a table whose columns
// changed gets a row count but no checksum, and a table only one version has gets nothing.
func TestCompareSaysWhatItCouldNotCompare(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	yaml := replaceOnce(t, accountsYAML, "owners (account_id text PRIMARY KEY, name text)", "owners (account_id text PRIMARY KEY, name text, email text)")
	yaml = replaceOnce(t, yaml, "      - CREATE TABLE audit (n bigserial PRIMARY KEY, event_id text)\n", "")
	_, err := s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v2", Definition: definition(t, yaml),
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 100}, {Topic: "bank", Partition: 1, Target: 100}}})
	require.NoError(t, err)

	cmp, err := s.Compare(ctx, "accounts_v1", "accounts_v2", nil)
	require.NoError(t, err)
	require.True(t, cmp.Passed)
	var compared []string
	for _, r := range cmp.Results {
		compared = append(compared, r.Kind+" "+r.Name)
	}
	require.Equal(t, []string{"row_count balances", "checksum balances", "row_count owners"}, compared)
	require.Equal(t, []string{"table audit: only in accounts_v1", "checksum owners: the versions' columns differ"}, cmp.Skipped)
}
