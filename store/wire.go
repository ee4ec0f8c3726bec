package store

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// The wire path: a batch of SQL handlers is encoded into the protocol's messages by
// Prepare, while the previous batch executes, so that Execute only writes bytes and reads
// results. pgx's SendBatch encodes every argument after it is called, and PostgreSQL waits for
// that: with 2,000 statements per transaction on one connection it was idle 15% of the time, 5%
// with the batches encoded ahead (docs/PERFORMANCE.md, "Encoding while the previous batch
// executes").
//
// The statements are prepared on the applier's connection under names of their own, once per
// connection and again after PostgreSQL refused a batch (see forget); Prepare encodes with the
// statements it saw, and Execute encodes again if they are gone. A code projection's batches keep pgx's path: their SQL is the
// user's, so preparing each new statement by name could grow without bound. So do folds: a
// fold's batch is one statement of megabytes, which PostgreSQL takes far longer to run than pgx
// to encode, and two such batches encoded at once (one executing, one prepared) raised the fold
// replay's peak RSS by about 40 MiB.

// onWire says whether the applier's batches take the wire path.
func (a *Applier) onWire() bool { return a.code == nil && len(a.folds) == 0 }

// statements are an applier's prepared statements on its current connection. Prepare reads them
// while Execute (on another goroutine) may add to them, forget them, or, after a reconnection,
// start over.
type statements struct {
	mu    sync.Mutex
	gen   int // incremented at every connect and whenever they are forgotten: batches encoded before must be encoded again
	seq   int // names them: kreplay_<seq>, never reused on a connection
	descs map[string]*pgconn.StatementDescription
}

// snapshot returns the statements' generation and the description of each SQL of qs, or ok
// false if one of them is not prepared yet.
func (s *statements) snapshot(qs []*pgx.QueuedQuery, into []*pgconn.StatementDescription) (int, []*pgconn.StatementDescription, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	into = into[:0]
	for _, q := range qs {
		sd := s.descs[q.SQL]
		if sd == nil {
			return 0, into, false
		}
		into = append(into, sd)
	}
	return s.gen, into, true
}

// take forgets the statements and returns them.
func (s *statements) take() map[string]*pgconn.StatementDescription {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	descs := s.descs
	s.descs = nil
	return descs
}

// current is the statements' generation.
func (s *statements) current() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// wire is a Prepared batch's encoding.
type wire struct {
	batch *pgconn.Batch // nil: not encoded (or already sent)
	gen   int           // the generation of the statements it names
	err   error         // an argument that could not be encoded
	at    int           // the statement whose argument it is
	descs []*pgconn.StatementDescription
	eqb   pgx.ExtendedQueryBuilder
	types *pgtype.Map // the Prepared's own: Prepare and Execute run on different goroutines
}

// textResult asks for kreplay.advance's state as text.
var textResult = []int16{pgtype.TextFormatCode}

// encode encodes p's statements with the statements the applier prepared on its current
// connection; it leaves p.wire.batch nil when one of them is not prepared there yet.
func (a *Applier) encode(p *Prepared) {
	w := &p.wire
	w.batch, w.err = nil, nil
	gen, descs, ok := a.stmts.snapshot(p.batch.QueuedQueries, w.descs)
	w.descs = descs
	if !ok {
		return
	}
	if w.types == nil {
		w.types = pgtype.NewMap()
	}
	b := &pgconn.Batch{}
	for i, q := range p.batch.QueuedQueries {
		sd := descs[i]
		if err := w.eqb.Build(w.types, sd, q.Arguments); err != nil {
			w.err, w.at = err, i
			return
		}
		// Results in text: only kreplay.advance's is read, and text needs no binary output
		// function of a type a handler might return.
		var results []int16
		if i == 0 {
			results = textResult
		}
		b.ExecStatement(sd, w.eqb.ParamValues, w.eqb.ParamFormats, results)
	}
	w.batch, w.gen = b, gen
}

// prepareStatements prepares on the applier's connection the statements of p it has not
// prepared there yet. An error is PostgreSQL's refusal of one of them (a column the handler
// names is gone, say), with the statement's index in p.
func (a *Applier) prepareStatements(ctx context.Context, p *Prepared) (int, error) {
	a.stmts.mu.Lock()
	defer a.stmts.mu.Unlock()
	if a.stmts.descs == nil {
		a.stmts.descs = map[string]*pgconn.StatementDescription{}
	}
	for i, q := range p.batch.QueuedQueries {
		if a.stmts.descs[q.SQL] != nil {
			continue
		}
		a.stmts.seq++
		sd, err := a.conn.Prepare(ctx, "kreplay_"+strconv.Itoa(a.stmts.seq), q.SQL)
		if err != nil {
			return i, err
		}
		a.stmts.descs[q.SQL] = sd
	}
	return 0, nil
}

// executeWire sends p as one implicit transaction on the wire path; see Apply for its errors.
func (a *Applier) executeWire(ctx context.Context, p *Prepared) (ApplyResult, error) {
	w := &p.wire
	if w.batch == nil || w.gen != a.stmts.current() {
		if i, err := a.prepareStatements(ctx, p); err != nil {
			a.forget(ctx)
			return ApplyResult{}, a.classify(ctx, err, p, p.queuedAt(i))
		}
		a.encode(p)
	}
	if w.err != nil {
		return ApplyResult{}, a.classify(ctx, w.err, p, p.queuedAt(w.at))
	}
	if w.batch == nil {
		return ApplyResult{}, fmt.Errorf("apply %s: a statement of the batch was not prepared", a.key)
	}
	state, i, err := a.sendWire(ctx, p)
	if err != nil {
		a.forget(ctx)
		return ApplyResult{}, a.classify(ctx, err, p, p.queuedAt(i))
	}
	return ApplyResult{State: state, Handled: p.handled}, nil
}

// sendWire writes p's encoded batch and reads its results: kreplay.advance's state, or the
// error and the index of the statement it came from (-1: the batch as a whole).
func (a *Applier) sendWire(ctx context.Context, p *Prepared) (State, int, error) {
	mrr := a.conn.PgConn().ExecBatch(ctx, p.wire.batch)
	p.wire.batch = nil // ExecBatch appended its Sync: a retry encodes again
	var state State
	n := len(p.batch.QueuedQueries)
	for i := range n {
		if !mrr.NextResult() {
			err := mrr.Close()
			if err == nil {
				err = fmt.Errorf("apply %s: PostgreSQL answered %d of the batch's %d statements", a.key, i, n)
			}
			return "", i, err
		}
		rr := mrr.ResultReader()
		if i == 0 && rr.NextRow() {
			if v := rr.Values(); len(v) == 1 {
				state = State(v[0])
			}
		}
		if _, err := rr.Close(); err != nil {
			_ = mrr.Close()
			return "", i, err
		}
	}
	return state, -1, mrr.Close()
}

// forget deallocates the applier's statements after PostgreSQL refused a batch, as pgx drops its
// statement cache: a statement keeps the parameter and result types of when it was prepared, so
// that after a table changed (a column retyped, say) it would fail for good, where preparing it
// again succeeds. On a connection that failed there is nothing to deallocate: the next connection
// starts without them.
func (a *Applier) forget(ctx context.Context) {
	descs := a.stmts.take()
	if a.conn == nil || a.conn.IsClosed() || ctx.Err() != nil {
		return
	}
	for _, sd := range descs {
		if err := a.conn.Deallocate(ctx, sd.Name); err != nil {
			return // the names are not reused: a statement left behind is only unused
		}
	}
}

// queuedAt is statement i of p's batch as classify takes it: the checkpoint (i == 0), an event's
// handler, or a fold.
func (p *Prepared) queuedAt(i int) queued {
	if i <= 0 || i > len(p.queued) {
		return queued{item: -1, fold: -1}
	}
	return p.queued[i-1]
}
