package store

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kreplay/kreplay/topology"
)

// foldPlan is a fold compiled to one statement per batch:
//
//	INSERT INTO t AS t (k..., c...)
//	SELECT k..., agg(v)... FROM (
//	    SELECT <key exprs>, <column exprs>, e.seq
//	    FROM unnest($1::text[], ..., $n::bigint[]) AS e(aggregate_id, ..., seq)) AS s
//	GROUP BY k...
//	ON CONFLICT (k...) DO UPDATE SET c = t.c + EXCLUDED.c, ...
//
// The arrays hold the batch's events of the fold's types; seq is their position in the batch,
// which orders `last`.
type foldPlan struct {
	table string
	sql   string
	args  []topology.Arg // the arrays $1..$len(args); then seq; then is_last when keyArgs is set
	types map[string]bool
	// keyArgs, when every key expression is a bare text or integer argument (@aggregate_id...),
	// lets kreplay flag the last event of each key itself, so that `last` is a plain aggregate
	// over the flagged row and PostgreSQL can hash the groups instead of sorting each one.
	keyArgs []topology.Arg
	// ordered reports whether the statement still needs ordered aggregates (sorts): the batch
	// then raises work_mem so that they do not spill to disk.
	ordered bool
}

// argColumn is the SQL type and the unnest column name of an argument.
func argColumn(a topology.Arg) (typ, name string) {
	switch a {
	case topology.ArgVersion, topology.ArgOffset:
		return "bigint", a.Name()
	case topology.ArgPartition:
		return "int", a.Name()
	case topology.ArgCreatedAt:
		return "timestamptz", a.Name()
	case topology.ArgData:
		return "jsonb", a.Name()
	}
	return "text", a.Name()
}

func compileFold(f topology.Fold) (*foldPlan, error) {
	p := &foldPlan{table: f.Table, types: map[string]bool{}}
	for _, t := range f.Events {
		p.types[t] = true
	}
	var used []topology.Arg
	expr := func(what, x string) (string, error) {
		out, args, err := topology.RewriteExpr(x, func(a topology.Arg) string {
			_, name := argColumn(a)
			return ident("e", name)
		})
		if err != nil {
			return "", fmt.Errorf("fold %q: %s: %w", f.Table, what, err)
		}
		for _, a := range args {
			if !slices.Contains(used, a) {
				used = append(used, a)
			}
		}
		return out, nil
	}
	keys := slices.Sorted(maps.Keys(f.Key))
	cols := slices.Sorted(maps.Keys(f.Columns))
	hasLast := false
	for _, c := range cols {
		if kind, _, _ := f.Columns[c].Aggregate(); kind == topology.AggLast {
			hasLast = true
		}
	}
	if hasLast {
		for _, k := range keys {
			a, ok := bareArg(f.Key[k])
			if !ok {
				p.keyArgs = nil
				break
			}
			p.keyArgs = append(p.keyArgs, a)
		}
		p.ordered = p.keyArgs == nil
	}
	var inner, outer, insert, conflict, set []string
	for i, k := range keys {
		x, err := expr("key "+k, f.Key[k])
		if err != nil {
			return nil, err
		}
		alias := "k" + strconv.Itoa(i)
		inner = append(inner, "("+x+") AS "+alias)
		outer = append(outer, alias)
		insert = append(insert, ident(k))
		conflict = append(conflict, ident(k))
	}
	groupBy := slices.Clone(outer)
	for i, c := range cols {
		kind, x, err := f.Columns[c].Aggregate()
		if err != nil {
			return nil, fmt.Errorf("fold %q: column %q: %w", f.Table, c, err)
		}
		alias := "v" + strconv.Itoa(i)
		if kind != topology.AggCount {
			if x, err = expr("column "+c, x); err != nil {
				return nil, err
			}
			inner = append(inner, "("+x+") AS "+alias)
		}
		col := ident(c)
		switch kind {
		case topology.AggSum:
			outer = append(outer, "sum("+alias+")")
			set = append(set, col+" = t."+col+" + EXCLUDED."+col)
		case topology.AggCount:
			outer = append(outer, "count(*)")
			set = append(set, col+" = t."+col+" + EXCLUDED."+col)
		case topology.AggMin:
			outer = append(outer, "min("+alias+")")
			set = append(set, col+" = least(t."+col+", EXCLUDED."+col+")")
		case topology.AggMax:
			outer = append(outer, "max("+alias+")")
			set = append(set, col+" = greatest(t."+col+", EXCLUDED."+col+")")
		case topology.AggLast:
			if p.keyArgs != nil {
				outer = append(outer, "(array_agg("+alias+") FILTER (WHERE is_last))[1]")
			} else {
				outer = append(outer, "(array_agg("+alias+" ORDER BY seq DESC))[1]")
			}
			set = append(set, col+" = EXCLUDED."+col)
		}
		insert = append(insert, col)
	}
	inner = append(inner, "e.seq")
	if p.keyArgs != nil {
		inner = append(inner, "e.is_last")
	}
	// The columns are zipped by position with ROWS FROM: one unnest per array, and the payloads
	// as one JSON array (PostgreSQL parses one document per batch about twice as fast as one
	// jsonb value per event; the values are the same).
	var funcs, names []string
	for i, a := range used {
		typ, name := argColumn(a)
		if a == topology.ArgData {
			funcs = append(funcs, "jsonb_array_elements($"+strconv.Itoa(i+1)+"::jsonb)")
		} else {
			funcs = append(funcs, "unnest($"+strconv.Itoa(i+1)+"::"+typ+"[])")
		}
		names = append(names, ident(name))
	}
	funcs = append(funcs, "unnest($"+strconv.Itoa(len(used)+1)+"::bigint[])")
	names = append(names, "seq")
	if p.keyArgs != nil {
		funcs = append(funcs, "unnest($"+strconv.Itoa(len(used)+2)+"::boolean[])")
		names = append(names, "is_last")
	}
	p.args = used
	action := "DO NOTHING"
	if len(set) > 0 {
		action = "DO UPDATE SET " + strings.Join(set, ", ")
	}
	p.sql = "INSERT INTO " + ident(f.Table) + " AS t (" + strings.Join(insert, ", ") + ")\n" +
		"SELECT " + strings.Join(outer, ", ") + " FROM (\n" +
		"  SELECT " + strings.Join(inner, ", ") + "\n" +
		"  FROM ROWS FROM (" + strings.Join(funcs, ", ") + ") AS e(" + strings.Join(names, ", ") + ")) AS s\n" +
		"GROUP BY " + strings.Join(groupBy, ", ") + "\n" +
		"ON CONFLICT (" + strings.Join(conflict, ", ") + ") " + action
	return p, nil
}

// bareArg recognises a key expression that is only an argument whose Go value compares exactly
// as PostgreSQL compares it (text and integers; not timestamps: PostgreSQL keeps microseconds).
func bareArg(expr string) (topology.Arg, bool) {
	e := strings.TrimSpace(expr)
	if !strings.HasPrefix(e, "@") {
		return 0, false
	}
	for _, a := range topology.Args {
		if e == "@"+a.Name() {
			switch a {
			case topology.ArgCreatedAt, topology.ArgData:
				return 0, false
			}
			return a, true
		}
	}
	return 0, false
}

func compileFolds(def topology.Definition) ([]*foldPlan, error) {
	var out []*foldPlan
	for _, f := range def.Folds {
		p, err := compileFold(f)
		if err != nil {
			return nil, fmt.Errorf("projection %q: %w", def.Projection, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// column is one argument's array in a batch.
type column interface {
	add(ev *topology.Event)
	slice(from, n int) any
	reset()
}

// typedColumn is the array of one argument of a Go type pgx encodes as a PostgreSQL array.
type typedColumn[T any] struct {
	get  func(*topology.Event) T
	vals []T
}

func (c *typedColumn[T]) add(ev *topology.Event) { c.vals = append(c.vals, c.get(ev)) }
func (c *typedColumn[T]) slice(from, n int) any  { return c.vals[from : from+n] }
func (c *typedColumn[T]) reset()                 { c.vals = c.vals[:0] }

// dataColumn holds the payloads and sends them as one JSON array (see compileFold).
type dataColumn struct {
	vals [][]byte
	doc  []byte
}

func (c *dataColumn) add(ev *topology.Event) { c.vals = append(c.vals, ev.Data) }
func (c *dataColumn) reset()                 { c.vals = c.vals[:0] }
func (c *dataColumn) slice(from, n int) any {
	c.doc = append(c.doc[:0], '[')
	for i, d := range c.vals[from : from+n] {
		if i > 0 {
			c.doc = append(c.doc, ',')
		}
		if len(d) == 0 {
			d = []byte("null")
		}
		c.doc = append(c.doc, d...)
	}
	return string(append(c.doc, ']'))
}

func newColumn(a topology.Arg) column {
	switch a {
	case topology.ArgData:
		return &dataColumn{}
	case topology.ArgVersion, topology.ArgOffset:
		return &typedColumn[int64]{get: func(ev *topology.Event) int64 { return ev.Arg(a).(int64) }}
	case topology.ArgPartition:
		return &typedColumn[int32]{get: func(ev *topology.Event) int32 { return ev.Partition }}
	case topology.ArgCreatedAt:
		return &typedColumn[time.Time]{get: func(ev *topology.Event) time.Time { return ev.CreatedAt }}
	}
	return &typedColumn[string]{get: func(ev *topology.Event) string { return ev.Arg(a).(string) }}
}

// foldBatch is a fold's part of one prepared batch: the arrays of its events.
type foldBatch struct {
	plan   *foldPlan
	cols   []column       // one per plan.args
	seq    []int64        // position of each folded event in the batch
	isLast []bool         // keyArgs set: whether it is its key's last event
	items  []int          // the batch's item index of each folded event
	lastOf map[string]int // key -> position of its last event in the batch
}

func (p *foldBatch) reset() {
	if p.cols == nil {
		for _, a := range p.plan.args {
			p.cols = append(p.cols, newColumn(a))
		}
	}
	for _, c := range p.cols {
		c.reset()
	}
	p.seq, p.isLast, p.items = p.seq[:0], p.isLast[:0], p.items[:0]
	clear(p.lastOf)
}

// add appends the arguments the fold uses of one event.
func (p *foldBatch) add(ev *topology.Event, item int) {
	for _, c := range p.cols {
		c.add(ev)
	}
	p.seq = append(p.seq, int64(len(p.items)))
	p.items = append(p.items, item)
}

// markLast flags the last event of each key among those added (keyArgs set).
func (p *foldBatch) markLast(items []Item) {
	if p.plan.keyArgs == nil {
		return
	}
	if p.lastOf == nil {
		p.lastOf = map[string]int{}
	}
	var b []byte
	for j, item := range p.items {
		b = b[:0]
		ev := &items[item].Event
		for _, a := range p.plan.keyArgs {
			b = appendKeyArg(b, ev, a)
		}
		p.lastOf[string(b)] = j
	}
	p.isLast = append(p.isLast[:0], make([]bool, len(p.items))...)
	for _, j := range p.lastOf {
		p.isLast[j] = true
	}
}

// appendKeyArg appends a key argument of ev and a separator (bareArg's arguments are text or
// integers: no fmt, no boxing, for the strings and integers of every event of a batch).
func appendKeyArg(b []byte, ev *topology.Event, a topology.Arg) []byte {
	switch a {
	case topology.ArgEventID:
		b = append(b, ev.ID...)
	case topology.ArgType:
		b = append(b, ev.Type...)
	case topology.ArgAggregateID:
		b = append(b, ev.AggregateID...)
	case topology.ArgTopic:
		b = append(b, ev.Topic...)
	case topology.ArgVersion:
		b = strconv.AppendInt(b, ev.Version, 10)
	case topology.ArgOffset:
		b = strconv.AppendInt(b, ev.Offset, 10)
	case topology.ArgPartition:
		b = strconv.AppendInt(b, int64(ev.Partition), 10)
	default:
		b = fmt.Append(b, ev.Arg(a))
	}
	return append(b, 0)
}

// arguments are the statement's parameters for the events added (from index from, n of them:
// one at a time when pinpointing an event the statement refuses).
func (p *foldBatch) arguments(from, n int) []any {
	out := make([]any, 0, len(p.cols)+2)
	for _, c := range p.cols {
		out = append(out, c.slice(from, n))
	}
	out = append(out, p.seq[from:from+n])
	if p.plan.keyArgs != nil {
		if n == 1 {
			out = append(out, []bool{true}) // probing one event: it is its key's last
		} else {
			out = append(out, p.isLast[from:from+n])
		}
	}
	return out
}

// queueFolds builds the folds' statements for items (only, when not nil, the event types
// applied) and hands each to queue in order, with the index of its fold (-1 for the work_mem
// setting an ordered fold needs first). It returns the number of events folded.
func queueFolds(folds []*foldBatch, items []Item, only map[string]bool, queue func(sql string, args []any, fold int)) int {
	n := 0
	for fi, f := range folds {
		f.reset()
		for i := range items {
			it := &items[i]
			if it.Kind == ItemEvent && f.plan.types[it.Event.Type] && (only == nil || only[it.Event.Type]) {
				f.add(&it.Event, i)
			}
		}
		if len(f.items) > 0 {
			f.markLast(items)
			if f.plan.ordered {
				// Ordered aggregates sort in memory, not on disk (for this transaction only).
				queue("SELECT set_config('work_mem', '64MB', true)", nil, -1)
			}
			queue(f.plan.sql, f.arguments(0, len(f.items)), fi)
			n += len(f.items)
		}
	}
	return n
}

// Statement is one SQL statement and its arguments.
type Statement struct {
	SQL  string
	Args []any
}

// FoldSet builds the statements a version's folds send for a batch, exactly as an Applier does,
// without an applier, a connection or a checkpoint: what a set-based batch asks of PostgreSQL
// by itself. The bench's ceiling_set runs them to measure PostgreSQL's limit for folds.
type FoldSet struct {
	folds []*foldBatch
	items []Item
}

// NewFoldSet compiles def's folds.
func NewFoldSet(def topology.Definition) (*FoldSet, error) {
	plans, err := compileFolds(def)
	if err != nil {
		return nil, err
	}
	s := &FoldSet{}
	for _, p := range plans {
		s.folds = append(s.folds, &foldBatch{plan: p})
	}
	return s, nil
}

// Statements are the statements of one batch of events, in the order the applier queues them
// after the checkpoint. Their arguments share buffers that the next call reuses.
func (s *FoldSet) Statements(events []topology.Event) []Statement {
	s.items = s.items[:0]
	for _, ev := range events {
		s.items = append(s.items, Item{Event: ev, Kind: ItemEvent})
	}
	var out []Statement
	queueFolds(s.folds, s.items, nil, func(sql string, args []any, _ int) {
		out = append(out, Statement{SQL: sql, Args: args})
	})
	return out
}
