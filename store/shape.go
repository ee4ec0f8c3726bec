package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The shape of the live views: the columns (name, type, position) a reader of `SELECT *` gets.
// A promotion or a rollback that changes them is noticed by clients that cache prepared
// statements: their next execution of a cached `SELECT *` on a changed view fails once per
// connection with "cached plan must not change result type" (SQLSTATE 0A000). A promotion lists
// what it changes (ShapeChange); one that removes, retypes or moves a column readers see needs
// SwapOptions.AllowShapeChange.

// ErrShapeChange: the promotion would remove, retype or move a column of a live view (or drop
// a view), and was not allowed to.
var ErrShapeChange = errors.New("the promotion changes the shape of the live views")

// Column is a column of a live view as readers see it.
type Column struct {
	Name string `json:"name"`
	// Type is PostgreSQL's name of its type (format_type), with COLLATE when its collation is
	// not its type's default.
	Type string `json:"type"`
}

func (c Column) String() string { return c.Name + " " + c.Type }

// ColumnRetype is a column whose type changes.
type ColumnRetype struct {
	Name string `json:"name"`
	From string `json:"from"`
	To   string `json:"to"`
}

// ColumnMove is a column whose position (1-based, as in `SELECT *`) changes: a reader that reads
// the columns by position would read another column there.
type ColumnMove struct {
	Name string `json:"name"`
	From int    `json:"from"`
	To   int    `json:"to"`
}

// ShapeChange is how a swap changes what readers of one live view see.
type ShapeChange struct {
	View    string         `json:"view"`              // schema.name
	Created bool           `json:"created,omitempty"` // a new view (Added lists its columns)
	Dropped bool           `json:"dropped,omitempty"` // the view goes away (Removed lists its columns)
	Added   []Column       `json:"added,omitempty"`
	Removed []Column       `json:"removed,omitempty"`
	Retyped []ColumnRetype `json:"retyped,omitempty"`
	Moved   []ColumnMove   `json:"moved,omitempty"`
}

// Breaking reports whether readers that name the view's columns, or read them by position, can
// break: a column removed, retyped or moved, or the view dropped. Columns added at the end (and
// new views) only are not breaking.
func (c ShapeChange) Breaking() bool {
	return c.Dropped || len(c.Removed) > 0 || len(c.Retyped) > 0 || len(c.Moved) > 0
}

// String is the change for humans: "public.balances: adds events bigint; retypes total bigint -> numeric".
func (c ShapeChange) String() string {
	cols := func(cs []Column) string {
		s := make([]string, len(cs))
		for i, x := range cs {
			s[i] = x.String()
		}
		return strings.Join(s, ", ")
	}
	switch {
	case c.Created:
		return c.View + ": new view (" + cols(c.Added) + ")"
	case c.Dropped:
		return c.View + ": dropped (" + cols(c.Removed) + ")"
	}
	var parts []string
	if len(c.Removed) > 0 {
		parts = append(parts, "removes "+cols(c.Removed))
	}
	if len(c.Retyped) > 0 {
		s := make([]string, len(c.Retyped))
		for i, x := range c.Retyped {
			s[i] = x.Name + " " + x.From + " -> " + x.To
		}
		parts = append(parts, "retypes "+strings.Join(s, ", "))
	}
	if len(c.Moved) > 0 {
		s := make([]string, len(c.Moved))
		for i, x := range c.Moved {
			s[i] = fmt.Sprintf("%s (position %d -> %d)", x.Name, x.From, x.To)
		}
		parts = append(parts, "moves "+strings.Join(s, ", "))
	}
	if len(c.Added) > 0 {
		parts = append(parts, "adds "+cols(c.Added))
	}
	return c.View + ": " + strings.Join(parts, "; ")
}

// BreakingChanges are the breaking ones of changes.
func BreakingChanges(changes []ShapeChange) []ShapeChange {
	var b []ShapeChange
	for _, c := range changes {
		if c.Breaking() {
			b = append(b, c)
		}
	}
	return b
}

// ShapeChangeError refuses a promotion that would make breaking shape changes.
type ShapeChangeError struct {
	Key     string
	Changes []ShapeChange // the breaking ones
}

func (e *ShapeChangeError) Error() string {
	s := make([]string, len(e.Changes))
	for i, c := range e.Changes {
		s[i] = c.String()
	}
	return fmt.Sprintf("promote %s would change columns that readers of the live views see (%s): clients that cache prepared statements of SELECT * (pgx's default mode, JDBC, ORMs) get \"cached plan must not change result type\" once per connection, and code that names a removed column fails; pass --allow-shape-change (control option allow_shape_change) to promote anyway",
		e.Key, strings.Join(s, "; "))
}

func (e *ShapeChangeError) Unwrap() error { return ErrShapeChange }

// ShapeChanges lists how making `to` live would change the views of its projection in the live
// schema, as they are now (nil when `to` is live, or when nothing changes).
func (s *Store) ShapeChanges(ctx context.Context, to string) ([]ShapeChange, error) {
	var changes []ShapeChange
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		v, err := getVersion(ctx, tx, to, false)
		if err != nil {
			return err
		}
		proj, err := getProjection(ctx, tx, v.Projection, false)
		if err != nil {
			return err
		}
		if proj.Live == to {
			return nil
		}
		changes, err = s.shapeChanges(ctx, tx, proj.Live, to)
		return err
	})
	return changes, err
}

// shapeChanges compares the live views of the tables of `from` and `to` as they are with the
// tables of `to`, view by view in name order. It reads the views themselves (not `from`'s
// tables): what readers see is what counts.
func (s *Store) shapeChanges(ctx context.Context, tx pgx.Tx, from, to string) ([]ShapeChange, error) {
	if from == "" {
		return nil, nil // the first live version: no reader saw another shape
	}
	newTables, err := relations(ctx, tx, to)
	if err != nil {
		return nil, err
	}
	oldTables, err := relations(ctx, tx, from)
	if err != nil {
		return nil, err
	}
	names := slices.Concat(newTables, oldTables)
	slices.Sort(names)
	names = slices.Compact(names)
	live, err := columnsOf(ctx, tx, s.cfg.LiveSchema, names)
	if err != nil {
		return nil, err
	}
	next, err := columnsOf(ctx, tx, to, newTables)
	if err != nil {
		return nil, err
	}
	var changes []ShapeChange
	for _, name := range names {
		oldCols, viewExists := live[name]
		newCols, inNew := next[name]
		c := ShapeChange{View: s.cfg.LiveSchema + "." + name}
		switch {
		case !viewExists && !inNew:
			continue
		case !viewExists:
			c.Created, c.Added = true, newCols
		case !inNew:
			c.Dropped, c.Removed = true, oldCols
		default:
			c = diffColumns(c, oldCols, newCols)
		}
		if c.Created || c.Dropped || len(c.Added)+len(c.Removed)+len(c.Retyped)+len(c.Moved) > 0 {
			changes = append(changes, c)
		}
	}
	return changes, nil
}

// diffColumns fills c with what changes from the columns old to cur (each in position order).
func diffColumns(c ShapeChange, old, cur []Column) ShapeChange {
	pos := func(cols []Column, name string) int {
		return slices.IndexFunc(cols, func(x Column) bool { return x.Name == name })
	}
	for i, o := range old {
		j := pos(cur, o.Name)
		switch {
		case j < 0:
			c.Removed = append(c.Removed, o)
			continue
		case cur[j].Type != o.Type:
			c.Retyped = append(c.Retyped, ColumnRetype{Name: o.Name, From: o.Type, To: cur[j].Type})
		}
		if j != i {
			c.Moved = append(c.Moved, ColumnMove{Name: o.Name, From: i + 1, To: j + 1})
		}
	}
	for _, n := range cur {
		if pos(old, n.Name) < 0 {
			c.Added = append(c.Added, n)
		}
	}
	return c
}

// columnsOf reads the columns of the named relations of a schema (relation -> columns in
// position order); relations that do not exist are absent.
func columnsOf(ctx context.Context, tx pgx.Tx, schema string, names []string) (map[string][]Column, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname, a.attname,
			format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attcollation <> t.typcollation
				THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_type t ON t.oid = a.atttypid
		LEFT JOIN pg_collation co ON co.oid = a.attcollation
		WHERE n.nspname = $1 AND c.relname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY c.relname, a.attnum`, schema, names)
	if err != nil {
		return nil, err
	}
	cols := map[string][]Column{}
	var rel string
	var col Column
	_, err = pgx.ForEachRow(rows, []any{&rel, &col.Name, &col.Type}, func() error {
		cols[rel] = append(cols[rel], col)
		return nil
	})
	return cols, err
}
