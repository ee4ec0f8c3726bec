package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
)

// viewBranches lists the version schemas a live view reads.
func viewBranches(t *testing.T, s *store.Store, view string) []string {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT DISTINCT n.nspname FROM pg_rewrite r
		JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
		JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE r.ev_class = ('public.' || $1)::regclass AND n.nspname <> 'kreplay' ORDER BY 1`, view)
	require.NoError(t, err)
	b, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return b
}

// Versions of the same shape are routed: the live views read all of them, each branch filtered
// on kreplay.projections.live_version; only the live branch runs (with its index), a swap
// between them only updates the catalog, so that a reader transaction holding the view does not
// delay it and nothing queues; removing a version takes its branch out first, and the views are
// not writable.
func TestRoutedViewsSwapWithoutLocks(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	started(t, s, "accounts_v1", true)
	_, err := s.Pool().Exec(ctx, "INSERT INTO accounts_v1.balances VALUES ('a', 1), ('b', 2)")
	require.NoError(t, err)
	started(t, s, "accounts_v2", false)
	tailing(t, s, "accounts_v2")
	_, err = s.Pool().Exec(ctx, "INSERT INTO accounts_v2.balances VALUES ('a', 1), ('b', 2)")
	require.NoError(t, err)
	require.Equal(t, []string{"accounts_v1"}, viewBranches(t, s, "balances"))

	require.NoError(t, s.Route(ctx, "accounts"))
	for _, v := range []string{"balances", "owners", "audit"} {
		require.Equal(t, []string{"accounts_v1", "accounts_v2"}, viewBranches(t, s, v), v)
	}
	require.NoError(t, s.Route(ctx, "accounts"), "routing again changes nothing")

	// The live branch uses its index; the other one never runs.
	rows, err := s.Pool().Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT total FROM public.balances WHERE account_id = 'a'")
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	require.Regexp(t, `Index (Only )?Scan using balances_pkey on balances (balances_1 )?\(actual rows=1 loops=1\)`, plan)
	require.Regexp(t, `Index (Only )?Scan using balances_pkey on balances balances_\d \(never executed\)`, plan)
	require.NotContains(t, plan, "Seq Scan on balances")
	t.Log(plan)

	// A reader holds the view in an open transaction: the routed swap neither waits for it nor
	// makes others wait.
	long, err := s.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = long.Rollback(ctx) }()
	var n int64
	require.NoError(t, long.QueryRow(ctx, "SELECT count(*) FROM public.balances").Scan(&n))
	require.Equal(t, int64(2), n)
	_, err = s.Pool().Exec(ctx, "UPDATE accounts_v2.balances SET total = total + 10")
	require.NoError(t, err)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := s.Swap(sctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.NoError(t, err)
	require.True(t, res.Routed)
	require.Equal(t, 1, res.Attempts, "the routed swap did not wait for the open reader")
	require.Empty(t, res.ShapeChanges)
	var sum int64
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT sum(total) FROM public.balances").Scan(&sum))
	require.Equal(t, int64(23), sum, "readers see accounts_v2 at once")
	require.NoError(t, long.QueryRow(ctx, "SELECT sum(total) FROM public.balances").Scan(&sum))
	require.Equal(t, int64(23), sum, "a read-committed reader's next statement sees v2")
	require.NoError(t, long.Rollback(ctx))

	res, err = s.Swap(ctx, "accounts_v1", store.SwapRollback, []store.State{store.StateRetired}, store.SwapOptions{})
	require.NoError(t, err)
	require.True(t, res.Routed)
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT sum(total) FROM public.balances").Scan(&sum))
	require.Equal(t, int64(3), sum)

	// Nobody writes through a routed view, kreplay's own role included.
	_, err = s.Pool().Exec(ctx, "INSERT INTO public.balances VALUES ('c', 3)")
	require.ErrorContains(t, err, "the live view public.balances is read-only")
	_, err = s.Pool().Exec(ctx, "UPDATE public.balances SET total = 0")
	require.ErrorContains(t, err, "the live view public.balances is read-only")

	// Removing accounts_v2 routes the views back to accounts_v1 alone, then drops its schema.
	_, err = s.RemoveVersion(ctx, "accounts_v2")
	require.NoError(t, err)
	require.NoError(t, s.DropVersion(ctx, "accounts_v2"))
	for _, v := range []string{"balances", "owners", "audit"} {
		require.Equal(t, []string{"accounts_v1"}, viewBranches(t, s, v), v)
	}
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT sum(total) FROM public.balances").Scan(&sum))
	require.Equal(t, int64(3), sum)
}
