package processor

import (
	"context"
	"time"

	"github.com/kreplay/kreplay/store"
)

// retry runs fn until it succeeds, fails for a reason that is not transient (see
// store.IsTransient), or ctx ends.
func retry(ctx context.Context, fn func() error) error {
	return retryUntil(ctx, fn, store.IsTransient)
}

// retryUntil runs fn until it succeeds, fails with an error retryable rejects, or ctx ends,
// backing off from 100ms to 5s.
func retryUntil(ctx context.Context, fn func() error, retryable func(error) bool) error {
	backoff := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
