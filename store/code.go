package store

// Go handlers: a projection whose handlers are Go code (topology.Code; package processor/projector
// implements CodeHandlers) is applied by the same Applier as SQL handlers, in the same transaction
// as the checkpoint, on the same connection of the version's own role. A pipelined handler queues
// its statements where a SQL handler's statement is queued (Prepare), so the batch stays one
// pipeline; a transactional handler is given the batch's transaction (Execute runs the batch as an
// explicit transaction, sending the pipelined statements between transactional events as
// sub-pipelines).

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kreplay/kreplay/topology"
)

// CodeStyle is how a Go handler applies an event.
type CodeStyle uint8

const (
	// CodeNone: the event type has no Go handler (the event only advances the checkpoint).
	CodeNone CodeStyle = iota
	// CodePipelined: the handler queues statements (CodeHandlers.Queue) and reads nothing.
	CodePipelined
	// CodeTransactional: the handler runs statements in the batch's transaction (CodeHandlers.Run).
	CodeTransactional
)

// CodeHandlers are the Go handlers of a code projection's version, as an Applier runs them.
// Package processor/projector implements it. Its methods may be called concurrently (several
// appliers of a version, and Queue of batch N+1 while batch N runs), and more than once for an
// event (a batch retried, or split around a poison event).
type CodeHandlers interface {
	// Style says how events of the type are handled.
	Style(eventType string) CodeStyle
	// Queue queues the statements of a pipelined handler for ev on q.
	Queue(q *StatementQueue, ev *topology.Event) error
	// Run runs a transactional handler for ev in tx, the batch's transaction.
	Run(ctx context.Context, tx pgx.Tx, ev *topology.Event) error
}

// ErrRetry, wrapped in an error a Go handler returns (package processor/projector exports it as
// projector.ErrRetry), says that the failure is the environment's, not the event's: the batch is
// rolled back and retried, never skipped.
var ErrRetry = errors.New("retry the batch")

// ErrTransactionEnded: a transactional handler ended the batch's transaction (a COMMIT or
// ROLLBACK it ran through SQL). What it committed cannot be told apart from the rest of the
// batch, so the version fails whatever its on_error policy: replay it with a fixed handler.
var ErrTransactionEnded = errors.New("a Go handler ended the batch's transaction")

// StatementQueue is where a pipelined Go handler queues the statements of one event: they run in
// the batch's pipeline, in order, after the statements of the events before it. It is valid
// during the handler's call only.
type StatementQueue struct {
	p    *Prepared
	item int
	err  error
}

// Queue queues a statement with positional arguments ($1, $2, ...), run with the version's
// schema as search_path. A statement that would end the batch's transaction (BEGIN, COMMIT,
// ROLLBACK, ...) is refused: the event fails as a poison event.
func (q *StatementQueue) Queue(sql string, args ...any) {
	if q.err != nil {
		return
	}
	if w := transactionControl(sql); w != "" {
		q.err = fmt.Errorf("queued %s: a handler's statements run in the batch's transaction, which kreplay commits with the checkpoint", w)
		return
	}
	q.p.batch.Queue(sql, args...)
	q.p.queued = append(q.p.queued, queued{item: q.item, fold: -1})
}

// transactionControl is the keyword of a statement that controls the transaction, "" otherwise.
// A guard against mistakes, not against hostile code. (It allocates nothing: it runs for every
// statement a pipelined handler queues.)
func transactionControl(sql string) string {
	s := strings.TrimLeft(sql, " \t\r\n(")
	end := strings.IndexFunc(s, func(r rune) bool { return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') })
	if end < 0 {
		end = len(s)
	}
	for _, w := range transactionKeywords {
		if strings.EqualFold(s[:end], w) {
			return w
		}
	}
	return ""
}

var transactionKeywords = []string{"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE"}

// txItem is an event of a batch with a transactional handler: it runs after the statements
// queued before it (queued[:at]).
type txItem struct {
	item, at int
}

// codeError classifies what a Go handler returned for item: an error wrapping a PostgreSQL error
// follows the SQLSTATE rule (IsPoison: only classes 22, 23 and P0001 are the event's fault); a
// failure of the connection (IsTransient), a timeout or cancellation of the handler's own, and
// ErrRetry are the environment's (retried, never skipped); any other Go error is the event's
// fault (a *HandlerError: on_error decides).
func (a *Applier) codeError(ctx context.Context, err error, items []Item, item int) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cerr := catalogError(err); cerr != err { //nolint:errorlint // identity: did catalogError translate it?
		return cerr
	}
	typ := items[item].Event.Type
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && IsPoison(err):
		return &HandlerError{Index: item, Err: fmt.Errorf("handler %q: %s", typ, pgMessage(err))}
	case errors.As(err, &pgErr):
		return &statementError{what: fmt.Sprintf("apply %s: handler %q", a.key, typ), err: err}
	case codeRetry(err):
		return fmt.Errorf("apply %s: handler %q: %w", a.key, typ, err)
	}
	return &HandlerError{Index: item, Err: fmt.Errorf("handler %q: %w", typ, err)}
}

// codeRetry reports whether a Go handler's error that is not PostgreSQL's is the environment's.
func codeRetry(err error) bool {
	return errors.Is(err, ErrRetry) || IsTransient(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// guardedTx is the batch's transaction as a transactional handler gets it: everything of pgx.Tx,
// except ending it (Commit, Rollback), which is kreplay's, with the checkpoint. Begin gives a
// savepoint, which the handler may commit or roll back.
type guardedTx struct {
	pgx.Tx
}

var errHandlerEnds = errors.New("a handler may not end the batch's transaction: kreplay commits it with the checkpoint (use tx.Begin for a savepoint)")

func (guardedTx) Commit(context.Context) error   { return errHandlerEnds }
func (guardedTx) Rollback(context.Context) error { return errHandlerEnds }
