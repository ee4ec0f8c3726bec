package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kreplay/kreplay/topology"
)

// runDDL runs the definition's table statements with search_path set to schema, checks that
// they created relations there and nowhere else, and restores the search_path.
func runDDL(ctx context.Context, tx pgx.Tx, schema string, def topology.Definition) error {
	var prev string
	if err := tx.QueryRow(ctx, "SELECT current_setting('search_path')").Scan(&prev); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", ident(schema)); err != nil {
		return err
	}
	for i, ddl := range def.Tables {
		if _, err := tx.Exec(ctx, ddl); err != nil {
			return &statementError{what: fmt.Sprintf("projection %q: tables[%d]", def.Projection, i), err: err}
		}
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('search_path', $1, true)", prev); err != nil {
		return err
	}
	// Relations created by this transaction outside the schema mean a statement named a schema.
	rows, err := tx.Query(ctx, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.xmin::text = (pg_current_xact_id()::xid)::text AND n.nspname NOT IN ($1, 'pg_toast')
		  AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1`, schema)
	if err != nil {
		return err
	}
	outside, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(outside) > 0 {
		return fmt.Errorf("projection %q: tables created %s outside the version's schema; table statements must not name a schema (kreplay sets search_path)",
			def.Projection, strings.Join(outside, ", "))
	}
	tables, err := relations(ctx, tx, schema)
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return fmt.Errorf("projection %q: its tables statements created no table", def.Projection)
	}
	return nil
}

// relations lists the tables (and views) of a version's schema: one live view is made per entry.
func relations(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, schema string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition ORDER BY 1`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Tables lists the tables of a version's schema (each has a view in the live schema while the
// version is live).
func (s *Store) Tables(ctx context.Context, key string) ([]string, error) {
	return relations(ctx, s.pool, key)
}

// pointViews makes the live schema's views of a projection select from schema `to` instead of
// `from` ("" when there were none). It plans the statements (see planViews) and runs them.
func (s *Store) pointViews(ctx context.Context, tx pgx.Tx, projection, from, to string) error {
	plan, err := s.planViews(ctx, tx, projection, from, to)
	if err != nil {
		return err
	}
	for _, st := range plan.statements {
		if _, err := tx.Exec(ctx, st.sql); err != nil {
			return &statementError{what: st.what, err: err}
		}
	}
	return nil
}

// viewPlan is what repointing a projection's views takes: the statements, in order, and the
// views that exist now (to lock before running them).
type viewPlan struct {
	statements []planned
	existing   []string // quoted names of the live views that exist, sorted
}

type planned struct {
	sql  string
	what string // for errors
}

// planViews plans the repointing of a projection's views from schema `from` to `to` (each view
// routed over the versions with `to`'s shape, see route.go), reading the
// catalog but changing nothing, so that a swap holds the views' locks only while it runs the
// statements: views of tables that `to` has are created, replaced in place (CREATE OR REPLACE,
// which keeps grants and dependent objects) when the new columns extend the old ones, or dropped
// and created with their grants copied when the shape changed; views of tables that only `from`
// had are dropped. It refuses to take over a relation that is not this projection's view.
func (s *Store) planViews(ctx context.Context, tx pgx.Tx, projection, from, to string) (*viewPlan, error) {
	live := s.cfg.LiveSchema
	plan := &viewPlan{}
	add := func(what, sql string) { plan.statements = append(plan.statements, planned{sql: sql, what: what}) }
	add("create schema "+live, "CREATE SCHEMA IF NOT EXISTS "+ident(live))
	newTables, err := relations(ctx, tx, to)
	if err != nil {
		return nil, err
	}
	// The views of `to` are routed over the versions with its shape (route.go).
	routes, err := routeSet(ctx, tx, projection, to)
	if err != nil {
		return nil, err
	}
	var oldTables []string
	if from != "" {
		if oldTables, err = relations(ctx, tx, from); err != nil {
			return nil, err
		}
	}
	for _, t := range newTables {
		view := ident(live, t)
		def := "AS " + viewDef(projection, t, routes)
		var kind string
		err := tx.QueryRow(ctx, `SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, live, t).Scan(&kind)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			add("create view "+live+"."+t, "CREATE VIEW "+view+" "+def)
		case err != nil:
			return nil, err
		case kind != "v":
			return nil, fmt.Errorf("the live schema %q already has a %s named %q that is not kreplay's view; rename or drop it, or set postgres.live_schema",
				live, relkindName(kind), t)
		default:
			plan.existing = append(plan.existing, view)
			if err := checkViewOwner(ctx, tx, live, t, projection); err != nil {
				return nil, err
			}
			extends, err := columnsExtend(ctx, tx, live, t, to, t)
			if err != nil {
				return nil, err
			}
			if extends {
				add("replace view "+live+"."+t, "CREATE OR REPLACE VIEW "+view+" "+def)
			} else {
				grants, err := viewGrants(ctx, tx, live, t)
				if err != nil {
					return nil, err
				}
				add("drop view "+live+"."+t+" to change its shape", "DROP VIEW "+view)
				add("create view "+live+"."+t, "CREATE VIEW "+view+" "+def)
				for _, g := range grants {
					add("restore a grant on "+live+"."+t, g)
				}
			}
		}
		add("comment on view "+live+"."+t, "COMMENT ON VIEW "+view+" IS "+quoteLiteral(viewComment(projection, to, routes)))
		add("make "+live+"."+t+" read-only", readOnlyTrigger(view))
		if s.cfg.ReaderRole != "" {
			add("grant select on "+live+"."+t+" to reader role "+s.cfg.ReaderRole, "GRANT SELECT ON "+view+" TO "+ident(s.cfg.ReaderRole))
		}
	}
	for _, t := range oldTables {
		if !slices.Contains(newTables, t) {
			plan.existing = append(plan.existing, ident(live, t))
			add("drop view "+live+"."+t, "DROP VIEW IF EXISTS "+ident(live, t))
		}
	}
	if s.cfg.ReaderRole != "" {
		add("grant usage on schema "+live+" to reader role "+s.cfg.ReaderRole, "GRANT USAGE ON SCHEMA "+ident(live)+" TO "+ident(s.cfg.ReaderRole))
	}
	slices.Sort(plan.existing)
	return plan, nil
}

// columnsExtend reports whether table newSchema.newTable's columns start with exactly the
// columns (names, types and collations, in order) of view viewSchema.view: then CREATE OR
// REPLACE VIEW can repoint the view in place (PostgreSQL refuses to change a view column's name,
// type or collation).
func columnsExtend(ctx context.Context, tx pgx.Tx, viewSchema, view, newSchema, newTable string) (bool, error) {
	cols := func(schema, rel string) ([]string, error) {
		rows, err := tx.Query(ctx, `SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' collation ' || a.attcollation::text
			FROM pg_attribute a
			JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, schema, rel)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	old, err := cols(viewSchema, view)
	if err != nil {
		return false, err
	}
	cur, err := cols(newSchema, newTable)
	if err != nil {
		return false, err
	}
	return len(cur) >= len(old) && slices.Equal(cur[:len(old)], old), nil
}

// viewGrants are the GRANT statements that give back what was granted on a view (other than to
// its owner).
func viewGrants(ctx context.Context, tx pgx.Tx, schema, table string) ([]string, error) {
	view := ident(schema, table)
	rows, err := tx.Query(ctx, `SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
			a.privilege_type, a.is_grantable
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
		LEFT JOIN pg_roles r ON r.oid = a.grantee
		WHERE n.nspname = $1 AND c.relname = $2 AND a.grantee <> c.relowner`, schema, table)
	if err != nil {
		return nil, err
	}
	var grants []string
	for rows.Next() {
		var grantee, priv string
		var grantable bool
		if err := rows.Scan(&grantee, &priv, &grantable); err != nil {
			return nil, err
		}
		g := "GRANT " + priv + " ON " + view + " TO " + grantee
		if grantable {
			g += " WITH GRANT OPTION"
		}
		grants = append(grants, g)
	}
	return grants, rows.Err()
}

// checkViewOwner refuses to take over a live view that belongs to another projection (two
// projections exposing the same table name) or that is not kreplay's at all. A routed view reads
// several versions of its projection, and kreplay.projections.
func checkViewOwner(ctx context.Context, tx pgx.Tx, schema, view, projection string) error {
	rows, err := tx.Query(ctx, `SELECT DISTINCT n.nspname, coalesce(v.projection, '')
		FROM pg_rewrite r
		JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
		JOIN pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN kreplay.versions v ON v.key = n.nspname
		WHERE n.nspname <> 'kreplay' -- a routed view reads kreplay.projections
		  AND r.ev_class = (SELECT c2.oid FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
		                    WHERE n2.nspname = $1 AND c2.relname = $2)`, schema, view)
	if err != nil {
		return err
	}
	type ref struct{ schema, projection string }
	refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ref, error) {
		var x ref
		err := r.Scan(&x.schema, &x.projection)
		return x, err
	})
	if err != nil {
		return err
	}
	for _, x := range refs {
		switch {
		case x.projection == "":
			return fmt.Errorf("the live schema %q already has a view %q that is not kreplay's (it reads %s); rename or drop it, or set postgres.live_schema",
				schema, view, x.schema)
		case x.projection != projection:
			return fmt.Errorf("projection %q cannot expose table %q in the live schema %q: projection %q already does; give one of them another table name",
				projection, view, schema, x.projection)
		}
	}
	return nil
}

func relkindName(k string) string {
	switch k {
	case "r", "p":
		return "table"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	case "S":
		return "sequence"
	case "i", "I":
		return "index"
	}
	return "relation"
}

// quoteLiteral quotes a string as an SQL literal (for COMMENT, which takes no parameters).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// pgMessage is a PostgreSQL error as a user reads it: message, detail and hint.
func pgMessage(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err.Error()
	}
	msg := pgErr.Message
	if pgErr.Detail != "" {
		msg += " (" + pgErr.Detail + ")"
	}
	if pgErr.Hint != "" {
		msg += "; hint: " + pgErr.Hint
	}
	return msg + " [SQLSTATE " + pgErr.Code + "]"
}
