package retry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The backoff doubles from Min to Max, each wait drawn in [base/2, base] (jitter), and starts
// over after Reset.
func TestBackoffDoublesWithJitterUpToMax(t *testing.T) {
	b := NewBackoff(100*time.Millisecond, time.Second)
	for _, ms := range []int64{100, 200, 400, 800, 1000, 1000} {
		base := time.Duration(ms) * time.Millisecond
		d := b.Next()
		require.GreaterOrEqual(t, d, base/2)
		require.LessOrEqual(t, d, base)
	}
	b.Reset()
	require.LessOrEqual(t, b.Next(), 100*time.Millisecond)
}

// A policy retries what it may, returns what it may not at once, and says when attempts ran out.
func TestPolicyRetriesOnlyWhatItMay(t *testing.T) {
	ctx := context.Background()
	transient, final := errors.New("transient"), errors.New("final")
	calls := 0
	err := Policy{Min: time.Millisecond, Max: time.Millisecond, Retryable: func(err error) bool { return errors.Is(err, transient) }}.Do(ctx, func(context.Context) error {
		calls++
		if calls < 3 {
			return transient
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls)

	calls = 0
	err = Policy{Min: time.Millisecond, Retryable: func(err error) bool { return errors.Is(err, transient) }}.Do(ctx, func(context.Context) error {
		calls++
		return final
	})
	require.ErrorIs(t, err, final)
	require.Equal(t, 1, calls)

	err = Policy{Min: time.Millisecond, Max: time.Millisecond, Attempts: 4}.Do(ctx, func(context.Context) error { return transient })
	require.ErrorIs(t, err, ErrExhausted)
	require.ErrorIs(t, err, transient)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = Policy{}.Do(cctx, func(context.Context) error { return transient })
	require.ErrorIs(t, err, context.Canceled)
}

// The logger writes the first failure of a cause at once, then at most one line a minute per
// cause, with the failures in between counted.
func TestLoggerRateLimitsPerCause(t *testing.T) {
	var out bytes.Buffer
	l := NewLogger(slog.New(slog.NewTextHandler(&out, nil)), slog.LevelWarn)
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	a, b := errors.New("column missing"), errors.New("connection refused")
	for range 100 {
		l.Failed("apply", a)
		l.Failed("apply", b)
		now = now.Add(100 * time.Millisecond) // 10s in all
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2, "one line per cause in the first minute:\n%s", out.String())
	now = now.Add(time.Minute)
	l.Failed("apply", a)
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[2], "still failing")
	require.Contains(t, lines[2], "failures_since_last_log=100")
}
