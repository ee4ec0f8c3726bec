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

// refusal is an error whose message is all a user reads and which is (errors.Is) the sentinel it
// stands for, without ending in the sentinel's text.
type refusal struct {
	msg string
	is  error
}

func (e *refusal) Error() string        { return e.msg }
func (e *refusal) Is(target error) bool { return target == e.is }

// refuse returns an error that reads as the format says and is the sentinel.
func refuse(sentinel error, format string, args ...any) error {
	return &refusal{msg: fmt.Sprintf(format, args...), is: sentinel}
}

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

// HandlerError is an event whose handler PostgreSQL refused for a reason tied to the event itself
// (see IsPoison: bad data, a constraint, an exception the handler's own code raised): retrying
// cannot help, the version's on_error policy decides.
type HandlerError struct {
	// Index of the item in the batch passed to Apply.
	Index int
	Err   error
}

func (e *HandlerError) Error() string { return e.Err.Error() }
func (e *HandlerError) Unwrap() error { return e.Err }

// IsPoison reports whether PostgreSQL refused a statement because of the event it was run for:
// a data exception (SQLSTATE class 22: a bad cast, a value out of range), an integrity
// constraint violation (class 23) or an exception raised by user code (P0001, RAISE). Only these
// are the event's own fault and go to the projection's on_error policy. Anything else (a column
// renamed, a privilege revoked, a read-only database, a timeout, a lost connection) is the
// environment's: the version retries without advancing past the event.
func IsPoison(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch {
	case strings.HasPrefix(pgErr.Code, "22"), strings.HasPrefix(pgErr.Code, "23"), pgErr.Code == "P0001":
		return true
	}
	return false
}

// IsStatementTimeout reports whether PostgreSQL canceled a statement (statement_timeout, or a
// cancel request: SQLSTATE 57014).
func IsStatementTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

// IsPermissionDenied reports whether PostgreSQL refused a statement for want of a privilege
// (SQLSTATE 42501).
func IsPermissionDenied(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// Cause names the kind of a failure in a few words, for metric labels and log grouping: the
// SQLSTATE class ("sqlstate_42"), "connection" or "other".
func Cause(err error) string {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && len(pgErr.Code) >= 2:
		return "sqlstate_" + strings.ToLower(pgErr.Code[:2])
	case IsTransient(err):
		return "connection"
	}
	return "other"
}

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
