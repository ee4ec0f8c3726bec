package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kreplay/kreplay/topology"
)

// ItemKind says what applying an item means.
type ItemKind uint8

const (
	// ItemEvent runs the event's handler, if its type has one and is applied by the version.
	ItemEvent ItemKind = iota
	// ItemMarker only moves the partition's position (a transaction marker, a control record).
	ItemMarker
	// ItemSkipped is a poison event skipped or dead-lettered by the on_error policy: it moves the
	// position and counts as skipped.
	ItemSkipped
)

// Item is one record of a batch, in the order it is applied.
type Item struct {
	Event topology.Event // Topic and Partition are always set; the rest for ItemEvent
	Next  int64          // the partition's next offset once this item is applied
	Kind  ItemKind
}

// ApplierConfig configures an Applier.
type ApplierConfig struct {
	// Key of the version: its schema is the search_path of the applier's connection.
	Key string
	// Definition is the version's snapshot; its handlers are run.
	Definition topology.Definition
	// EventTypes, when non-empty, are the only types whose handlers run (others still advance).
	EventTypes []string
	// Worker names the applier in pg_stat_activity (application_name kreplay:<key>:<worker>).
	Worker string
	// Code are the Go handlers of a version whose definition has Code (see code.go): required
	// then, and ignored otherwise.
	Code CodeHandlers
}

// ApplyResult is what a committed batch did.
type ApplyResult struct {
	// State is the version's state after the batch: tailing once a replay has caught up.
	State State
	// Handled is the number of handler statements run.
	Handled int
}

// Applier applies batches of one version on a connection of its own that logged in as the
// version's role, with search_path set to the version's schema. It is not safe for concurrent use; parallel appliers each have their own.
type Applier struct {
	store    *Store
	key      string
	worker   string
	handlers map[string]*topology.Handler
	only     map[string]bool
	code     CodeHandlers // a code projection's Go handlers, nil for SQL handlers
	conn     *pgx.Conn

	folds []*foldPlan
	own   *Prepared  // Apply's
	stmts statements // the wire path's prepared statements (wire.go)
}

// Prepared is a batch ready to send: its statements built and their arguments bound. Building it
// is the applier's CPU work; a caller can prepare batch N+1 while batch N executes (see Prepare
// and Execute). A Prepared belongs to one Applier and is reused batch after batch.
type Prepared struct {
	items   []Item
	own     []Item // Apply's copy of its caller's items
	batch   pgx.Batch
	args    []any
	queued  []queued // the statements after the checkpoint, in order
	adv     advanceArgs
	folds   []*foldBatch
	handled int
	sent    bool // executed at least once since Prepare

	gen     int32          // the generation Prepare was given
	sq      StatementQueue // the pipelined Go handlers' queue, reused event after event
	txs     []txItem       // events with a transactional Go handler, in order
	prepErr error          // what a pipelined Go handler returned (Execute returns it, or prepares again)
	wire    wire           // the batch encoded for the wire path (wire.go)
}

// queued is a statement of a batch: an event's handler (item >= 0) or a fold (fold >= 0).
type queued struct {
	item, fold int
}

// NewApplier compiles a version's handlers. It connects on first use and reconnects after a
// connection failure.
func (s *Store) NewApplier(cfg ApplierConfig) (*Applier, error) {
	hs, err := cfg.Definition.ParseHandlers()
	if err != nil {
		return nil, err
	}
	folds, err := compileFolds(cfg.Definition)
	if err != nil {
		return nil, err
	}
	if cfg.Definition.Code != nil && cfg.Code == nil {
		return nil, fmt.Errorf("version %s: its handlers are Go code (projector %s version %s), and none was given", cfg.Key, cfg.Definition.Projection, cfg.Definition.Code.Version)
	}
	a := &Applier{store: s, key: cfg.Key, worker: cfg.Worker, handlers: make(map[string]*topology.Handler, len(hs)), folds: folds}
	if cfg.Definition.Code != nil {
		a.code = cfg.Code
	}
	a.own = a.NewPrepared()
	for t, h := range hs {
		a.handlers[t] = &h
	}
	if len(cfg.EventTypes) > 0 {
		a.only = make(map[string]bool, len(cfg.EventTypes))
		for _, t := range cfg.EventTypes {
			a.only[t] = true
		}
	}
	return a, nil
}

func (a *Applier) connect(ctx context.Context) error {
	if a.conn != nil && !a.conn.IsClosed() {
		return nil
	}
	name := "kreplay:" + a.key
	if a.worker != "" {
		name += ":" + a.worker
	}
	// The version's own role (see role.go): its handlers and folds can write only its schema.
	cfg, err := a.store.versionLogin(ctx, a.key, name)
	if err != nil {
		return fmt.Errorf("applier %s: %w", a.key, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("applier %s: connect: %w", a.key, err)
	}
	a.conn = conn
	a.stmts.take() // the new connection has none of them
	return nil
}

// Close closes the applier's connection.
func (a *Applier) Close(ctx context.Context) {
	if a.conn != nil {
		_ = a.conn.Close(ctx)
		a.conn = nil
	}
}

// Apply applies items in one transaction together with the checkpoints of the partitions they
// belong to, for the given consumer-group generation. Errors:
//   - ErrFenced: the generation no longer owns a partition; nothing was written.
//   - ErrNotRunning: the version was paused, failed or removed meanwhile; nothing was written.
//   - ErrAlreadyApplied: the batch was applied by an earlier send (after which the connection
//     failed); nothing was written again.
//   - *HandlerError: an event's handler was refused by PostgreSQL for a reason tied to the event
//     (IsPoison), or kreplay could not encode its arguments; nothing was written, Index says
//     which item.
//   - otherwise a problem of the environment (a connection, the server, a column or a privilege
//     that changed: see IsTransient and IsPoison); nothing was written, and running the same
//     batch again can succeed once the environment is fixed.
func (a *Applier) Apply(ctx context.Context, generation int32, items []Item) (ApplyResult, error) {
	a.own.own = append(a.own.own[:0], items...)
	a.Prepare(a.own, generation, a.own.own)
	return a.Execute(ctx, a.own)
}

// NewPrepared returns an empty Prepared for this applier.
func (a *Applier) NewPrepared() *Prepared {
	p := &Prepared{}
	for _, f := range a.folds {
		p.folds = append(p.folds, &foldBatch{plan: f})
	}
	return p
}

// Prepare builds items into p for the given consumer-group generation. p keeps items (no copy):
// the caller must not change them until p has executed. It only uses the applier's compiled
// handlers (and a code projection's pipelined Go handlers), so it may run while another Prepared
// executes. What a Go handler returns is kept for Execute.
func (a *Applier) Prepare(p *Prepared, generation int32, items []Item) {
	p.items = items
	p.gen = generation
	p.txs = p.txs[:0]
	p.prepErr = nil
	p.sent = false
	p.batch.QueuedQueries = p.batch.QueuedQueries[:0]
	p.queued = p.queued[:0]
	p.args = p.args[:0]
	p.handled = 0
	p.adv.reset()
	for i := range items {
		it := &items[i]
		var applied, skipped int64
		switch it.Kind {
		case ItemEvent:
			applied = 1
		case ItemSkipped:
			skipped = 1
		}
		p.adv.add(it.Event.Topic, it.Event.Partition, it.Next, applied, skipped)
	}
	// The checkpoint goes first: a fenced or stopped version (paused, removed: its tables may be
	// gone) is refused before any handler runs, and the whole pipeline is one transaction anyway.
	p.batch.Queue("SELECT kreplay.advance($1, $2, $3, $4, $5, $6, $7)",
		a.key, generation, p.adv.topics, p.adv.partitions, p.adv.next, p.adv.applied, p.adv.skipped)
	for i := range items {
		it := &items[i]
		if it.Kind != ItemEvent {
			continue
		}
		ev := &it.Event
		if a.only != nil && !a.only[ev.Type] {
			continue
		}
		if a.code != nil {
			if !a.prepareCode(p, i) {
				break
			}
			continue
		}
		h := a.handlers[ev.Type]
		if h == nil {
			continue
		}
		start := len(p.args)
		for _, arg := range h.Args {
			p.args = append(p.args, ev.Arg(arg))
		}
		p.batch.Queue(h.Positional, p.args[start:len(p.args):len(p.args)]...)
		p.queued = append(p.queued, queued{item: i, fold: -1})
		p.handled++
	}
	p.handled += queueFolds(p.folds, items, a.only, func(sql string, args []any, fold int) {
		p.batch.Queue(sql, args...)
		p.queued = append(p.queued, queued{item: -1, fold: fold})
	})
	if a.onWire() {
		a.encode(p)
	}
}

// prepareCode applies a code projection's Go handler for items[i] to p: a pipelined handler
// queues its statements, a transactional one is noted for Execute. It returns false when the
// handler failed (p.prepErr says how): the rest of the batch is not prepared.
func (a *Applier) prepareCode(p *Prepared, i int) bool {
	ev := &p.items[i].Event
	switch a.code.Style(ev.Type) {
	case CodePipelined:
		q := &p.sq
		*q = StatementQueue{p: p, item: i}
		err := a.code.Queue(q, ev)
		if err == nil {
			err = q.err
		}
		if err != nil {
			p.prepErr = a.codeError(context.Background(), err, p.items, i)
			return false
		}
		p.handled++
	case CodeTransactional:
		p.txs = append(p.txs, txItem{item: i, at: len(p.queued)})
		p.handled++
	}
	return true
}

// Execute sends a prepared batch as one transaction; see Apply for its errors. A Prepared may be
// executed again after a transient error. A batch with transactional Go handlers runs as an
// explicit transaction (see executeTx).
func (a *Applier) Execute(ctx context.Context, p *Prepared) (ApplyResult, error) {
	if len(p.items) == 0 {
		return ApplyResult{}, nil
	}
	if p.prepErr != nil {
		var herr *HandlerError
		if !errors.As(p.prepErr, &herr) {
			// The environment's (ErrRetry, a connection): run the handlers again.
			a.Prepare(p, p.gen, p.items)
		}
		if p.prepErr != nil {
			return ApplyResult{}, p.prepErr
		}
	}
	if err := a.connect(ctx); err != nil {
		return ApplyResult{}, err
	}
	if a.onWire() {
		return a.executeWire(ctx, p)
	}
	if p.sent {
		// pgx records in each queued query the prepared statement it became on the connection it
		// was sent on. A retry may run on a new connection (the old one was terminated), where
		// that statement does not exist: queue fresh copies so that they are prepared again.
		for i, q := range p.batch.QueuedQueries {
			p.batch.QueuedQueries[i] = &pgx.QueuedQuery{SQL: q.SQL, Arguments: q.Arguments}
		}
	}
	p.sent = true
	if len(p.txs) > 0 {
		return a.executeTx(ctx, p)
	}
	br := a.conn.SendBatch(ctx, &p.batch)
	var state State
	if err := br.QueryRow().Scan(&state); err != nil {
		_ = br.Close()
		return ApplyResult{}, a.classify(ctx, err, p, queued{item: -1, fold: -1})
	}
	for _, q := range p.queued {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return ApplyResult{}, a.classify(ctx, err, p, q)
		}
	}
	if err := br.Close(); err != nil {
		return ApplyResult{}, a.classify(ctx, err, p, queued{item: -1, fold: -1})
	}
	return ApplyResult{State: state, Handled: p.handled}, nil
}

// executeTx runs a batch that has transactional Go handlers as one explicit transaction: the
// pipelined statements queued before each such event (the checkpoint first) are sent as one
// pipeline, then the handler runs in the transaction, and so on; the transaction commits after
// the last statement. Each transactional event costs round trips that a pipeline does not.
func (a *Applier) executeTx(ctx context.Context, p *Prepared) (ApplyResult, error) {
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return ApplyResult{}, a.classify(ctx, err, p, queued{item: -1, fold: -1})
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op once committed
	qs := p.batch.QueuedQueries
	var state State
	next := 0 // the first statement of qs not sent yet
	send := func(end int) error {
		if end <= next {
			return nil
		}
		sub := pgx.Batch{QueuedQueries: qs[next:end]}
		br := tx.SendBatch(ctx, &sub)
		for i := next; i < end; i++ {
			var err error
			if i == 0 {
				err = br.QueryRow().Scan(&state)
			} else {
				_, err = br.Exec()
			}
			if err != nil {
				_ = br.Close()
				q := queued{item: -1, fold: -1}
				if i > 0 {
					q = p.queued[i-1] // [0] is the checkpoint
				}
				return a.classify(ctx, err, p, q)
			}
		}
		if err := br.Close(); err != nil {
			return a.classify(ctx, err, p, queued{item: -1, fold: -1})
		}
		next = end
		return nil
	}
	for _, t := range p.txs {
		if err := send(t.at + 1); err != nil {
			return ApplyResult{}, err
		}
		ev := &p.items[t.item].Event
		if err := a.code.Run(ctx, guardedTx{tx}, ev); err != nil {
			return ApplyResult{}, a.codeError(ctx, err, p.items, t.item)
		}
		switch a.conn.PgConn().TxStatus() {
		case 'T': // in the transaction, as it should be
		case 'E':
			return ApplyResult{}, fmt.Errorf("apply %s: handler %q returned no error, but a statement of it failed (the transaction is aborted): return that error, so that kreplay can tell the event's fault from the environment's", a.key, ev.Type)
		default:
			return ApplyResult{}, fmt.Errorf("apply %s: handler %q: %w", a.key, ev.Type, ErrTransactionEnded)
		}
	}
	if err := send(len(qs)); err != nil {
		return ApplyResult{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return ApplyResult{}, a.classify(ctx, err, p, queued{item: -1, fold: -1})
	}
	return ApplyResult{State: state, Handled: p.handled}, nil
}

// classify turns a failed batch into one of Apply's documented errors. q is the statement that
// failed (item and fold both -1 for the checkpoint statement).
func (a *Applier) classify(ctx context.Context, err error, p *Prepared, q queued) error {
	items := p.items
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cerr := catalogError(err); cerr != err { //nolint:errorlint // identity: did catalogError translate it?
		return cerr
	}
	if IsTransient(err) {
		return fmt.Errorf("apply %s: %w", a.key, err)
	}
	// On a connection that has not prepared them yet, pgx prepares all the batch's statements
	// before it runs any: one PostgreSQL refuses then fails the first result, the checkpoint's.
	// Blame the statement it was, as when the prepared statement fails to run.
	var pre pgx.ErrPreprocessingBatch
	if q.item < 0 && q.fold < 0 && errors.As(err, &pre) {
		q = p.statement(pre.SQL())
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case q.item >= 0 && IsPoison(err):
			return &HandlerError{Index: q.item, Err: fmt.Errorf("handler %q: %s", items[q.item].Event.Type, pgMessage(err))}
		case q.item >= 0:
			return &statementError{what: fmt.Sprintf("apply %s: handler %q", a.key, items[q.item].Event.Type), err: err}
		case q.fold >= 0 && !IsPoison(err):
			return &statementError{what: fmt.Sprintf("apply %s: fold %q", a.key, a.folds[q.fold].table), err: err}
		case q.fold >= 0:
			// One statement for many events: find the event it fails on.
			if herr := a.pinpoint(ctx, p, q.fold); herr != nil {
				return herr
			}
			return &statementError{what: fmt.Sprintf("apply %s: fold %q", a.key, a.folds[q.fold].table), err: err}
		}
		return fmt.Errorf("apply %s: checkpoint: %w", a.key, err)
	}
	// Not from the server (e.g. an argument pgx could not encode): find the event one by one.
	if herr := a.pinpoint(ctx, p, -1); herr != nil {
		return herr
	}
	return fmt.Errorf("apply %s: %w", a.key, err)
}

// statement is the first statement after the checkpoint whose SQL is sql: an event's handler, a
// fold, or neither (item and fold -1, as for the checkpoint).
func (p *Prepared) statement(sql string) queued {
	for qi, q := range p.queued {
		if p.batch.QueuedQueries[qi+1].SQL == sql { // [0] is the checkpoint
			return q
		}
	}
	return queued{item: -1, fold: -1}
}

// pinpoint runs the batch's statements event by event in a transaction that is rolled back, and
// returns the first event that fails as a *HandlerError (nil if none does). fold >= 0 probes
// only that fold.
func (a *Applier) pinpoint(ctx context.Context, p *Prepared, fold int) error {
	items := p.items
	if err := a.connect(ctx); err != nil {
		return nil //nolint:nilerr // best effort: the caller reports the batch's own error
	}
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return nil //nolint:nilerr // as above
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a probe, never committed
	fail := func(i int, what string, err error) error {
		var pgErr *pgconn.PgError
		if ctx.Err() != nil || IsTransient(err) || (errors.As(err, &pgErr) && !IsPoison(err)) {
			return nil //nolint:nilerr // not the event's fault: the caller reports the batch's own error
		}
		return &HandlerError{Index: i, Err: fmt.Errorf("%s %q: %s", what, items[i].Event.Type, pgMessage(err))}
	}
	ti := 0
	runCode := func(upTo int) error { // the transactional handlers of the events before queued[upTo]
		for ; ti < len(p.txs) && p.txs[ti].at <= upTo; ti++ {
			t := p.txs[ti]
			if fold >= 0 {
				continue
			}
			if err := a.code.Run(ctx, guardedTx{tx}, &items[t.item].Event); err != nil {
				var herr *HandlerError
				if errors.As(a.codeError(ctx, err, items, t.item), &herr) {
					return herr
				}
				return errStop
			}
		}
		return nil
	}
	for qi, q := range p.queued {
		if err := runCode(qi); err != nil {
			return pinpointResult(err)
		}
		bq := p.batch.QueuedQueries[qi+1] // [0] is the checkpoint
		switch {
		case q.item >= 0 && fold < 0:
			if _, err := tx.Exec(ctx, bq.SQL, bq.Arguments...); err != nil {
				return fail(q.item, "handler", err)
			}
		case q.fold >= 0 && (fold < 0 || fold == q.fold):
			f := p.folds[q.fold]
			for j, item := range f.items {
				if _, err := tx.Exec(ctx, f.plan.sql, f.arguments(j, 1)...); err != nil {
					return fail(item, "fold "+strconv.Quote(f.plan.table)+" of event type", err)
				}
			}
		}
	}
	return pinpointResult(runCode(len(p.queued)))
}

// errStop ends a probe at a failure that is not the event's fault.
var errStop = errors.New("stop")

// pinpointResult is pinpoint's answer for what a probe of Go handlers returned: a *HandlerError,
// or nil (no event at fault).
func pinpointResult(err error) error {
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// advanceArgs accumulates the per-partition arguments of kreplay.advance for one batch.
type advanceArgs struct {
	topics     []string
	partitions []int32
	next       []int64
	applied    []int64
	skipped    []int64
}

func (a *advanceArgs) reset() {
	a.topics, a.partitions, a.next = a.topics[:0], a.partitions[:0], a.next[:0]
	a.applied, a.skipped = a.applied[:0], a.skipped[:0]
}

func (a *advanceArgs) add(topic string, partition int32, next, applied, skipped int64) {
	for i := range a.topics { // a batch touches few partitions: a scan beats a map
		if a.partitions[i] == partition && a.topics[i] == topic {
			a.next[i] = max(a.next[i], next)
			a.applied[i] += applied
			a.skipped[i] += skipped
			return
		}
	}
	a.topics = append(a.topics, topic)
	a.partitions = append(a.partitions, partition)
	a.next = append(a.next, next)
	a.applied = append(a.applied, applied)
	a.skipped = append(a.skipped, skipped)
}
