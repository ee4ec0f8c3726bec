package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrNotFound: no such version, projection or command.
	ErrNotFound = errors.New("not found")
	// ErrExists: the key (or projection version) already exists.
	ErrExists = errors.New("already exists")
	// ErrFenced: the caller's group generation no longer owns the partitions it writes.
	ErrFenced = errors.New("fenced: partitions were reassigned to a newer group generation")
	// ErrNotRunning: the version is not in a state in which it consumes (paused, failed, removed).
	ErrNotRunning = errors.New("version is not running")
	// ErrInvalidTransition: the command is not allowed in the version's current state.
	ErrInvalidTransition = errors.New("invalid state transition")
	// ErrAlreadyApplied: the batch's offsets were all applied by an earlier send of the same
	// batch (its commit succeeded, the acknowledgement was lost); nothing was written again.
	ErrAlreadyApplied = errors.New("batch already applied")
)

// SQLSTATEs raised by the catalog functions (see migrations/001_catalog.sql).
const (
	codeFenced         = "KR001"
	codeNotRunning     = "KR002"
	codeAlreadyApplied = "KR003"
)

// TransitionError says which state a version was in and which ones the change needs.
type TransitionError struct {
	Key     string
	Action  string
	State   State
	Allowed []State
}

func (e *TransitionError) Error() string {
	allowed := make([]string, len(e.Allowed))
	for i, s := range e.Allowed {
		allowed[i] = string(s)
	}
	return fmt.Sprintf("cannot %s %s: it is %s (allowed from: %s)", e.Action, e.Key, e.State, strings.Join(allowed, ", "))
}

func (e *TransitionError) Unwrap() error { return ErrInvalidTransition }

// HandlerError is an event whose handler PostgreSQL refused for a reason tied to the event or the
// handler (bad data, constraint, missing column): retrying cannot help, the version's on_error
// policy decides.
type HandlerError struct {
	// Index of the item in the batch passed to Apply.
	Index int
	Err   error
}

func (e *HandlerError) Error() string { return e.Err.Error() }
func (e *HandlerError) Unwrap() error { return e.Err }

// IsTransient reports whether err is worth retrying as is: the connection, the server or a
// conflict with another transaction, not the statement or the event.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"40", // transaction rollback: serialization failure, deadlock
			"53", // insufficient resources
			"57", // operator intervention: admin shutdown, cannot connect now, query canceled
			"58": // system error
			return true
		}
		return pgErr.Code == "55P03" || // lock_not_available (lock_timeout)
			concurrentlyUpdated(pgErr)
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "conn busy") ||
		strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "unexpected EOF")
}

// concurrentlyUpdated: a catalog row (the live schema's, by a GRANT USAGE ON SCHEMA in two
// swaps at once, say) was changed by a transaction that committed while this one waited for it.
// PostgreSQL reports it as an internal error, but the statement succeeds when run again.
func concurrentlyUpdated(pgErr *pgconn.PgError) bool {
	return pgErr.Code == "XX000" && pgErr.Message == "tuple concurrently updated"
}

// isConflict reports whether err is PostgreSQL refusing a transaction because of a concurrent
// one (serialization failure, deadlock, lock_timeout, a catalog row updated concurrently): the
// transaction was rolled back and running it again can succeed. Unlike IsTransient, it excludes
// connection failures, after which a transaction may have committed unbeknownst to the caller.
func isConflict(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", "40P01", "55P03":
		return true
	}
	return concurrentlyUpdated(pgErr)
}

// statementError is a statement's failure as a user reads it: what the statement was for, then
// PostgreSQL's message, detail and hint (see pgMessage). It keeps the original error in the
// chain, so that errors.As still finds the *pgconn.PgError and its SQLSTATE, on which retrying
// depends.
type statementError struct {
	what string
	err  error
}

func (e *statementError) Error() string { return e.what + ": " + pgMessage(e.err) }
func (e *statementError) Unwrap() error { return e.err }

// catalogError maps the catalog functions' SQLSTATEs to the package's sentinels.
func catalogError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case codeFenced:
			return fmt.Errorf("%w (%s)", ErrFenced, pgErr.Message)
		case codeNotRunning:
			return fmt.Errorf("%w (%s)", ErrNotRunning, pgErr.Message)
		case codeAlreadyApplied:
			return fmt.Errorf("%w (%s)", ErrAlreadyApplied, pgErr.Message)
		}
	}
	return err
}
