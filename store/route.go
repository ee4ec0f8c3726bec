package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/internal/retry"
)

// Routed views: a promotion that readers cannot stall.
//
// Repointing a view takes an ACCESS EXCLUSIVE lock on it, which waits for every reader
// transaction that has read it, and every reader that comes later queues behind that request.
// So when several versions of a projection have tables of the same shape (names, columns, types,
// in order), each live view selects from all of them, each branch filtered on the live version:
//
//	SELECT * FROM balances_v1.balances WHERE (SELECT live_version FROM kreplay.projections WHERE name = 'balances') = 'balances_v1'
//	UNION ALL
//	SELECT * FROM balances_v2.balances WHERE (SELECT live_version FROM kreplay.projections WHERE name = 'balances') = 'balances_v2'
//
// The filter is a pseudoconstant: PostgreSQL runs the sub-select once per query (an InitPlan)
// and skips every branch whose One-Time Filter is false (EXPLAIN ANALYZE shows them "never
// executed"); the live branch is planned as if it were alone (its indexes are used). A query
// reads live_version and the tables in one snapshot, so it sees one version, whole.
//
// Then promotion and rollback between routed versions only update kreplay.projections, in the
// transaction that checks the offsets (checkNotBehind): no lock a reader waits for, and none
// that waits for a reader. The branches change (Route) when a version is created and before one
// is dropped, off the promotion's critical path, with lock_timeout and retries like a swap; a
// swap whose target has no branch, or another shape, repoints the views as before (planViews),
// and routes them over the new live version's shape at the same time.
//
// Nothing writes through a live view: each has an INSTEAD OF trigger that refuses (migration 008),
// after PostgreSQL's privilege check (a version's role gets "permission denied").

// routeSet lists, in key order, the projection's versions (not removed, with a schema) whose
// tables have exactly the shape of live's tables, live included.
func routeSet(ctx context.Context, tx pgx.Tx, projection, live string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT v.key FROM kreplay.versions v
		WHERE v.projection = $1 AND v.state <> 'removed' AND v.key <> $2
		  AND EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = v.key) ORDER BY v.key`, projection, live)
	if err != nil {
		return nil, err
	}
	others, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	shape := func(schema string) ([]string, map[string][]Column, error) {
		tables, err := relations(ctx, tx, schema)
		if err != nil {
			return nil, nil, err
		}
		cols, err := columnsOf(ctx, tx, schema, tables)
		return tables, cols, err
	}
	liveTables, liveCols, err := shape(live)
	if err != nil {
		return nil, err
	}
	set := []string{live}
	for _, k := range others {
		tables, cols, err := shape(k)
		if err != nil {
			return nil, err
		}
		if slices.Equal(tables, liveTables) && maps.EqualFunc(cols, liveCols, slices.Equal) {
			set = append(set, k)
		}
	}
	slices.Sort(set)
	return set, nil
}

// viewDef is the query of the live view of table over the versions of routes: a plain SELECT
// of the one version, or the routed UNION ALL.
func viewDef(projection, table string, routes []string) string {
	if len(routes) == 1 {
		return "SELECT * FROM " + ident(routes[0], table)
	}
	live := "(SELECT live_version FROM kreplay.projections WHERE name = " + quoteLiteral(projection) + ")"
	parts := make([]string, len(routes))
	for i, k := range routes {
		parts[i] = "SELECT * FROM " + ident(k, table) + " WHERE " + live + " = " + quoteLiteral(k)
	}
	return strings.Join(parts, " UNION ALL ")
}

// readOnlyTrigger is the statement that makes a live view refuse writes (migration 008).
func readOnlyTrigger(view string) string {
	return "CREATE OR REPLACE TRIGGER kreplay_read_only INSTEAD OF INSERT OR UPDATE OR DELETE ON " + view +
		" FOR EACH ROW EXECUTE FUNCTION kreplay.refuse_live_view_write()"
}

// viewComment is the comment of a live view: which version(s) it reads.
func viewComment(projection, live string, routes []string) string {
	if len(routes) <= 1 {
		return fmt.Sprintf("kreplay: projection %s, version %s", projection, live)
	}
	return fmt.Sprintf("kreplay: projection %s, the live version (kreplay.projections.live_version) of: %s", projection, strings.Join(routes, ", "))
}

// viewBranches lists, sorted, the schemas other than kreplay's whose relations a view reads (the
// versions it has a branch for); nil when the view does not exist.
func viewBranches(ctx context.Context, tx pgx.Tx, schema, view string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT n.nspname
		FROM pg_rewrite r
		JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
		JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname <> 'kreplay' AND r.ev_class = (SELECT c2.oid FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
		                    WHERE n2.nspname = $1 AND c2.relname = $2 AND c2.relkind = 'v')
		ORDER BY 1`, schema, view)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// routedTo reports whether a swap from `from` to `to` can leave the views as they are and only
// change kreplay.projections: the tables have the same shape, every live view of the projection
// has a branch for both, and the reader role (if any) has its grants.
func (s *Store) routedTo(ctx context.Context, tx pgx.Tx, from, to string, shape []ShapeChange) (bool, error) {
	if from == "" || len(shape) > 0 {
		return false, nil
	}
	tables, err := relations(ctx, tx, to)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		branches, err := viewBranches(ctx, tx, s.cfg.LiveSchema, t)
		if err != nil {
			return false, err
		}
		if !slices.Contains(branches, to) || !slices.Contains(branches, from) {
			return false, nil
		}
		if s.cfg.ReaderRole != "" {
			// A reader role set since the views were made gets its grants from a repointing swap.
			var granted bool
			if err := tx.QueryRow(ctx, `SELECT has_table_privilege($1, $2, 'SELECT') AND has_schema_privilege($1, $3, 'USAGE')`,
				s.cfg.ReaderRole, ident(s.cfg.LiveSchema, t), s.cfg.LiveSchema).Scan(&granted); err != nil {
				return false, err
			}
			if !granted {
				return false, nil
			}
		}
	}
	return len(tables) > 0, nil
}

// Route gives the projection's live views a branch for every version whose tables have the live
// version's shape, and none for the others (removed versions included): see routeSet. It changes
// nothing when the views have those branches already. Like a swap, each attempt takes the views'
// locks with lock_timeout, and attempts are retried with backoff until ctx ends, so that a
// long-running reader delays it without queueing the other readers behind it.
func (s *Store) Route(ctx context.Context, projection string) error {
	backoff := retry.NewBackoff(20*time.Millisecond, time.Second)
	var lastErr error
	for attempt := 1; ; attempt++ {
		err := s.routeOnce(ctx, projection)
		if err == nil {
			return nil
		}
		if !IsTransient(err) {
			return fmt.Errorf("route the views of %s: %w", projection, err)
		}
		lastErr = err
		if !retry.Sleep(ctx, backoff.Next()) {
			return fmt.Errorf("route the views of %s: gave up after %d attempts: %w", projection, attempt, lastErr)
		}
	}
}

func (s *Store) routeOnce(ctx context.Context, projection string) error {
	live := s.cfg.LiveSchema
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
			return err
		}
		// The projection's row: a swap waits, so that the live version stays what it is here.
		proj, err := getProjection(ctx, tx, projection, true)
		if err != nil {
			return err
		}
		if proj.Live == "" {
			return nil
		}
		routes, err := routeSet(ctx, tx, projection, proj.Live)
		if err != nil {
			return err
		}
		tables, err := relations(ctx, tx, proj.Live)
		if err != nil {
			return err
		}
		var views []string
		b := &pgx.Batch{}
		for _, t := range tables {
			branches, err := viewBranches(ctx, tx, live, t)
			if err != nil {
				return err
			}
			if len(branches) == 0 || slices.Equal(branches, routes) {
				continue // no view (the swap that makes one routes it), or routed already
			}
			if err := checkViewOwner(ctx, tx, live, t, projection); err != nil {
				return err
			}
			view := ident(live, t)
			views = append(views, view)
			b.Queue("CREATE OR REPLACE VIEW " + view + " AS " + viewDef(projection, t, routes))
			b.Queue("COMMENT ON VIEW " + view + " IS " + quoteLiteral(viewComment(projection, proj.Live, routes)))
			b.Queue(readOnlyTrigger(view))
		}
		if len(views) == 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", s.cfg.LockTimeout.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(views, ", ")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			return err
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// errStillRead: a live view still reads a version that is to be dropped.
var errStillRead = errors.New("live views still read the version's tables")

// checkNotRead refuses to drop schema key while a view of the live schema reads one of its
// relations: DROP SCHEMA ... CASCADE would drop the live view.
func (s *Store) checkNotRead(ctx context.Context, tx pgx.Tx, key string) error {
	var views []string
	rows, err := tx.Query(ctx, `SELECT DISTINCT vn.nspname || '.' || v.relname
		FROM pg_rewrite r
		JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace
		JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
		JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class JOIN pg_namespace cn ON cn.oid = c.relnamespace
		WHERE cn.nspname = $1 AND vn.nspname = $2 ORDER BY 1`, key, s.cfg.LiveSchema)
	if err != nil {
		return err
	}
	if views, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return err
	}
	if len(views) > 0 {
		return fmt.Errorf("%w: %s read %s; not dropping its schema (that would drop them)", errStillRead, strings.Join(views, ", "), key)
	}
	return nil
}
