package topology

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Fold declares a table that a projection maintains set-based instead of event by event: in each
// batch, the events of Events are grouped by Key and the aggregate of each column is upserted
// with one statement for the whole batch (INSERT ... SELECT ... FROM unnest(...) GROUP BY key
// ON CONFLICT (key) DO UPDATE). Because sum and count add up, min and max keep the extreme, and
// last keeps the value of the event applied last (in the version's order), the result is exactly
// what applying the events one by one would give, in far fewer statements. The table must have
// a unique index on the key columns, and no handler may write the fold's columns.
//
//	folds:
//	  - table: balances
//	    events: [MoneyDeposited, MoneyWithdrawn]
//	    key: {account_id: "@aggregate_id"}
//	    columns:
//	      total: {sum: "CASE @type WHEN 'MoneyDeposited' THEN (@data->>'amount')::bigint ELSE -(@data->>'amount')::bigint END"}
//	      events: {count: true}
//	      updated_at: {last: "@created_at"}
type Fold struct {
	Table   string                `yaml:"table" json:"table"`
	Events  []string              `yaml:"events" json:"events"`   // the event types folded into the table
	Key     map[string]string     `yaml:"key" json:"key"`         // key column -> expression
	Columns map[string]FoldColumn `yaml:"columns" json:"columns"` // column -> its aggregate
}

// FoldColumn is the aggregate of one column: exactly one of its fields is set. The expressions
// may use the handler arguments (@data, @created_at, ...).
type FoldColumn struct {
	Sum   string `yaml:"sum,omitempty" json:"sum,omitempty"`     // adds the expression's values
	Count bool   `yaml:"count,omitempty" json:"count,omitempty"` // counts the events
	Min   string `yaml:"min,omitempty" json:"min,omitempty"`     // keeps the smallest value
	Max   string `yaml:"max,omitempty" json:"max,omitempty"`     // keeps the largest value
	Last  string `yaml:"last,omitempty" json:"last,omitempty"`   // keeps the value of the last event
}

// Aggregates a fold column can have.
const (
	AggSum   = "sum"
	AggCount = "count"
	AggMin   = "min"
	AggMax   = "max"
	AggLast  = "last"
)

// Aggregate returns the column's aggregate and its expression ("" for count).
func (c FoldColumn) Aggregate() (kind, expr string, err error) {
	var set []string
	for _, x := range []struct {
		kind, expr string
		on         bool
	}{
		{AggSum, c.Sum, c.Sum != ""}, {AggCount, "", c.Count}, {AggMin, c.Min, c.Min != ""},
		{AggMax, c.Max, c.Max != ""}, {AggLast, c.Last, c.Last != ""},
	} {
		if x.on {
			set = append(set, x.kind)
			kind, expr = x.kind, x.expr
		}
	}
	switch len(set) {
	case 1:
		return kind, expr, nil
	case 0:
		return "", "", errors.New("no aggregate; set one of sum, count, min, max, last")
	}
	return "", "", fmt.Errorf("%s set together; a column has one aggregate", strings.Join(set, " and "))
}

// validate checks a fold without a database (PostgreSQL checks the SQL it compiles to, see
// store.ValidateDefinition).
func (f Fold) validate() []error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("fold %q: "+format, append([]any{f.Table}, args...)...))
	}
	if strings.TrimSpace(f.Table) == "" {
		errs = append(errs, errors.New("fold: table is blank; name the table the fold maintains"))
	}
	if len(f.Events) == 0 {
		add("events: none; list the event types folded into the table")
	}
	for i, e := range f.Events {
		if strings.TrimSpace(e) == "" {
			add("events[%d] is blank", i)
		} else if slices.Contains(f.Events[:i], e) {
			add("event type %q is listed twice", e)
		}
	}
	if len(f.Key) == 0 {
		add("key: none; map the key columns (the table's unique key) to expressions, e.g. {account_id: \"@aggregate_id\"}")
	}
	exprOK := func(what, expr string) {
		if _, _, err := RewriteExpr(expr, func(a Arg) string { return "x" }); err != nil {
			add("%s: %w", what, err)
		}
	}
	for _, col := range slices.Sorted(maps.Keys(f.Key)) {
		if strings.TrimSpace(col) == "" {
			add("key: a blank column name")
		}
		exprOK("key "+col, f.Key[col])
	}
	for _, col := range slices.Sorted(maps.Keys(f.Columns)) {
		if strings.TrimSpace(col) == "" {
			add("columns: a blank column name")
		}
		if _, ok := f.Key[col]; ok {
			add("column %q is also a key column", col)
		}
		kind, expr, err := f.Columns[col].Aggregate()
		if err != nil {
			add("column %q: %w", col, err)
			continue
		}
		if kind != AggCount {
			exprOK("column "+col, expr)
		}
	}
	return errs
}

// trimFold removes insignificant white space from a fold's expressions (like the statements of
// a definition).
func trimFold(f Fold) Fold {
	out := Fold{Table: strings.TrimSpace(f.Table), Events: trimAll(f.Events), Key: map[string]string{}, Columns: map[string]FoldColumn{}}
	for k, v := range f.Key {
		out.Key[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for k, c := range f.Columns {
		out.Columns[strings.TrimSpace(k)] = FoldColumn{Sum: strings.TrimSpace(c.Sum), Count: c.Count,
			Min: strings.TrimSpace(c.Min), Max: strings.TrimSpace(c.Max), Last: strings.TrimSpace(c.Last)}
	}
	return out
}
