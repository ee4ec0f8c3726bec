// Package retry is kreplay's one retry loop: capped exponential backoff with full jitter, a
// rule for what is worth retrying, and logs that say what is failing without flooding: the
// first failure of a cause is logged at once, then at most one line a minute per cause, with
// the number of failures since the last line.
package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Policy says how to retry. The zero value retries every error, from 100ms up to 5s apart,
// until the context ends, without logging.
type Policy struct {
	// Min is the first backoff. Defaults to 100ms.
	Min time.Duration
	// Max caps the backoff. Defaults to 5s.
	Max time.Duration
	// Retryable says whether an error is worth another attempt; an error it rejects is returned
	// at once. Nil: every error is.
	Retryable func(error) bool
	// Attempts bounds the attempts (0: no bound). When they run out the last error is returned,
	// wrapped in ErrExhausted.
	Attempts int
	// Log, when set, receives the failures (see Logger).
	Log *Logger
	// What names the operation in logs: "apply batch", "publish status".
	What string
}

// ErrExhausted wraps the last error when a policy's attempts ran out.
var ErrExhausted = errors.New("retries exhausted")

// Do runs fn until it returns nil, an error the policy does not retry (returned as is), or the
// attempts run out; it returns ctx's error, wrapping the last failure, when ctx ends first.
func (p Policy) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	b := p.Backoff()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			if attempt > 1 && p.Log != nil {
				p.Log.Recovered(p.What, attempt-1)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.Retryable != nil && !p.Retryable(err) {
			return err
		}
		if p.Attempts > 0 && attempt >= p.Attempts {
			return fmt.Errorf("%w after %d attempts: %w", ErrExhausted, attempt, err)
		}
		if p.Log != nil {
			p.Log.Failed(p.What, err)
		}
		if !Sleep(ctx, b.Next()) {
			return fmt.Errorf("%w (last failure: %w)", ctx.Err(), err)
		}
	}
}

// Backoff returns the policy's backoff sequence.
func (p Policy) Backoff() *Backoff {
	lo, hi := p.Min, p.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 5 * time.Second
	}
	return &Backoff{min: lo, max: max(lo, hi)}
}

// Backoff is a capped exponential backoff with full jitter: the n-th wait is uniform in
// [base/2, base], base doubling from Min up to Max.
type Backoff struct {
	min, max time.Duration
	n        int
}

// NewBackoff returns a backoff from lo doubling up to hi.
func NewBackoff(lo, hi time.Duration) *Backoff { return Policy{Min: lo, Max: hi}.Backoff() }

// Next is the next wait.
func (b *Backoff) Next() time.Duration {
	base := b.min << min(b.n, 30)
	if base <= 0 || base > b.max {
		base = b.max
	} else {
		b.n++
	}
	half := base / 2
	return half + rand.N(half+1) //nolint:gosec // jitter, not security
}

// Reset starts the sequence over (after a success that lasted).
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d or until ctx ends; it reports whether the wait completed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Logger logs failures of retried operations: the first failure of a cause at once, then at
// most one line per Every per cause with the count of failures since the last line. A cause is
// the operation and the error's message. Safe for concurrent use.
type Logger struct {
	log   *slog.Logger
	level slog.Level
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	causes map[string]*cause
}

type cause struct {
	logged time.Time
	count  int
}

// NewLogger logs through l at level (Warn is usual), at most one line a minute per cause.
func NewLogger(l *slog.Logger, level slog.Level) *Logger {
	return &Logger{log: l, level: level, every: time.Minute, now: time.Now, causes: map[string]*cause{}}
}

// maxCauses bounds the causes remembered; past it the oldest are forgotten.
const maxCauses = 256

// Failed records a failure of the operation what, logging it if it is the first of its cause
// or the last line for that cause is older than a minute. Attrs are added to the line.
func (l *Logger) Failed(what string, err error, attrs ...any) {
	key := what + "\x00" + err.Error()
	now := l.now()
	l.mu.Lock()
	c := l.causes[key]
	if c == nil {
		if len(l.causes) >= maxCauses {
			l.forgetOldest()
		}
		c = &cause{}
		l.causes[key] = c
	}
	c.count++
	first := c.logged.IsZero()
	due := first || now.Sub(c.logged) >= l.every
	n := c.count
	if due {
		c.logged, c.count = now, 0
	}
	l.mu.Unlock()
	if !due {
		return
	}
	msg := what + " failed; retrying"
	args := append([]any{"err", err}, attrs...)
	if !first {
		msg = what + " still failing; retrying"
		args = append(args, "failures_since_last_log", n)
	}
	l.log.Log(context.Background(), l.level, msg, args...)
}

// Recovered logs that the operation succeeded after failures (at info), and forgets its causes.
func (l *Logger) Recovered(what string, failures int, attrs ...any) {
	l.mu.Lock()
	for k := range l.causes {
		if len(k) > len(what) && k[:len(what)] == what && k[len(what)] == 0 {
			delete(l.causes, k)
		}
	}
	l.mu.Unlock()
	l.log.Info(what+" succeeded after failures", append([]any{"failures", failures}, attrs...)...)
}

func (l *Logger) forgetOldest() {
	var oldest string
	var at time.Time
	for k, c := range l.causes {
		if oldest == "" || c.logged.Before(at) {
			oldest, at = k, c.logged
		}
	}
	delete(l.causes, oldest)
}
