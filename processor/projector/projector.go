package projector

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Event is an event as Go handlers and reactors get it: its envelope (ID, Type, AggregateID,
// Version, CreatedAt), its payload (Data, raw JSON, read-only) and where it is in Kafka (Topic,
// Partition, Offset, Timestamp). Handlers must not keep it, or its Data, after they return.
type Event = topology.Event

// ErrRetry, wrapped in a handler's error (fmt.Errorf("lookup rates: %w", projector.ErrRetry)),
// says the failure is the environment's, not the event's: the batch is rolled back and retried
// with backoff, never skipped, and the version's status says why meanwhile.
var ErrRetry = store.ErrRetry

// Projector is a projection whose handlers are Go code: what a config file's projection declares
// (its name, sources, ordering, on_error, tables, checks, lookups and operational settings), with
// a Handler per event type instead of SQL statements, and a Version that names the code.
//
// Version goes into the projection's definition hash: change it whenever the handlers' code
// changes what they write. A program then runs a new replay of it, exactly as for a changed SQL
// handler; a version keeps running the code of the Version it was created with, so the program
// must register that code too until the version is removed (see the package documentation,
// "Rolling out a change").
type Projector struct {
	// Name is the projection's name (1-45 characters from a-z, 0-9 and _).
	Name string
	// Version names the code of the handlers, such as "1" or "2026-11-30" (no spaces, at most
	// 64 bytes). Part of the definition and its hash.
	Version string
	// Sources are the topics the projection reads. A topic declared under the config's
	// sources: is decoded as declared there; another is a json source with the default field
	// names.
	Sources []string
	// Ordering is global (one merged order, the default) or partition.
	Ordering topology.Ordering
	// OnError is what an event whose handler fails does: fail (the default), skip or
	// dead_letter. See the package documentation, "Errors".
	OnError topology.OnError
	// Tables are the DDL statements of the read model, run in the version's schema.
	Tables []string
	// Checks are the queries verify compares between two versions. Defaults to none.
	Checks []string
	// Reads are read-only lookups outside the version's schema (schema.table), as under
	// reads: in the config. Defaults to none.
	Reads []string
	// Handlers maps each event type to its handler (Pipelined or Transactional). Events of
	// other types only advance the checkpoint.
	Handlers map[string]Handler
	// BatchSize is the maximum number of events per transaction. Defaults to 2000.
	BatchSize int
	// Workers is the number of parallel appliers with ordering partition. Defaults to 4.
	Workers int
	// IdleTimeout is how long an empty partition at its end may hold back the merge while
	// live. Defaults to 1s.
	IdleTimeout time.Duration
	// MaxLateness is how long, while tailing, the merge holds an event for the partitions at
	// their end to show a record at or after it (see topology.Projection.MaxLateness). Nil
	// defaults to topology.DefaultMaxLateness; a pointer to 0 holds nothing back.
	MaxLateness *time.Duration
	// AllowTruncatedHistory lets the first version start at the log start when retention has
	// removed records. Defaults to false.
	AllowTruncatedHistory bool
}

// Handler applies the events of one type: make it with Pipelined or Transactional.
type Handler struct {
	pipelined     func(b *Batch, ev *Event) error
	transactional func(ctx context.Context, tx pgx.Tx, ev *Event) error
}

// Pipelined is a handler that queues statements for an event and reads nothing: kreplay sends
// them in the batch's pipeline, after the checkpoint and the statements of the events before, in
// one round trip per batch — as fast as SQL handlers. fn runs while the batch is prepared, which
// may be before the previous batch has committed: it must compute the statements from the event
// alone (and from its own immutable data), never from the read model. It may run more than once
// for an event (a batch retried or split around a poison event), and concurrently for different
// events: it must have no side effects.
func Pipelined(fn func(b *Batch, ev *Event) error) Handler { return Handler{pipelined: fn} }

// Transactional is a handler given the batch's transaction, for read-modify-write logic: it
// runs after the statements of the events before it, and may read what they wrote. The
// transaction is on the version's own connection (its schema is the search_path; its role can
// write nothing else); kreplay commits it with the checkpoint, so Commit and Rollback are
// refused (tx.Begin gives a savepoint). It is slower than Pipelined: each statement is a round
// trip, and a batch with a transactional event is sent in several pipelines instead of one. It
// may run more than once for an event (a batch retried), each time in a new transaction: it
// must have no side effects outside tx.
func Transactional(fn func(ctx context.Context, tx pgx.Tx, ev *Event) error) Handler {
	return Handler{transactional: fn}
}

// Batch is where a pipelined handler queues the statements of its event.
type Batch struct {
	q *store.StatementQueue
}

// Queue queues a statement with positional arguments ($1, $2, ...). Tables are named without a
// schema: the version's schema is the search_path. Arguments are encoded by pgx (strings,
// integers, time.Time, []byte for bytea, json.RawMessage or a []byte cast with $n::jsonb for
// jsonb, ...). A statement that would end the batch's transaction (BEGIN, COMMIT, ROLLBACK,
// SAVEPOINT, ...) is refused, and the event fails.
func (b *Batch) Queue(sql string, args ...any) { b.q.Queue(sql, args...) }

// Projection is the projector as a config projection: its Code records the version and the
// handled event types, its handlers are the Go ones (CodeHandlers).
func (p *Projector) Projection() topology.Projection {
	return topology.Projection{
		Name: p.Name, Ordering: p.Ordering, OnError: p.OnError,
		Sources: slices.Clone(p.Sources), Tables: slices.Clone(p.Tables), Checks: slices.Clone(p.Checks), Reads: slices.Clone(p.Reads),
		IdleTimeout: p.IdleTimeout, MaxLateness: p.MaxLateness, BatchSize: p.BatchSize, Workers: p.Workers, AllowTruncatedHistory: p.AllowTruncatedHistory,
		Code: &topology.Code{Version: p.Version, EventTypes: slices.Sorted(maps.Keys(p.Handlers))},
	}
}

// Validate checks what the config's validation cannot see: a projector is given, and each
// handler is one of the two kinds. processor.New validates the rest with the config.
func (p *Projector) Validate() error {
	if p == nil {
		return errors.New("a nil *projector.Projector")
	}
	var errs []error
	for _, t := range slices.Sorted(maps.Keys(p.Handlers)) {
		h := p.Handlers[t]
		if (h.pipelined == nil) == (h.transactional == nil) {
			errs = append(errs, fmt.Errorf("projector %q version %q: handler %q: make it with projector.Pipelined or projector.Transactional", p.Name, p.Version, t))
		}
	}
	return errors.Join(errs...)
}

// CodeHandlers returns the projector's handlers as kreplay's applier runs them. The processor
// calls it for each version of the projector; a program has no need to.
func (p *Projector) CodeHandlers() store.CodeHandlers {
	return code{name: p.Name, version: p.Version, handlers: maps.Clone(p.Handlers)}
}

// code runs a projector's handlers for the store's Applier, turning a panic into the event's
// failure.
type code struct {
	name, version string
	handlers      map[string]Handler
}

func (c code) Style(eventType string) store.CodeStyle {
	h, ok := c.handlers[eventType]
	switch {
	case !ok:
		return store.CodeNone
	case h.transactional != nil:
		return store.CodeTransactional
	}
	return store.CodePipelined
}

func (c code) Queue(q *store.StatementQueue, ev *topology.Event) (err error) {
	defer c.recover(ev, &err)
	return c.handlers[ev.Type].pipelined(&Batch{q: q}, ev)
}

func (c code) Run(ctx context.Context, tx pgx.Tx, ev *topology.Event) (err error) {
	defer c.recover(ev, &err)
	return c.handlers[ev.Type].transactional(ctx, tx, ev)
}

// recover turns a handler's panic into its error (the event's fault: on_error decides), with the
// stack's first lines to find it.
func (c code) recover(ev *topology.Event, err *error) {
	if r := recover(); r != nil {
		stack := strings.Join(strings.SplitN(string(debug.Stack()), "\n", 12)[:11], "\n")
		*err = fmt.Errorf("projector %s version %s panicked on event %s (offset %d): %v\n%s", c.name, c.version, ev.ID, ev.Offset, r, stack)
	}
}
