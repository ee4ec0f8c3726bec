package startstop

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Stop cancels the group's context and returns only once every goroutine it started returned.
func TestStopWaitsForEveryGoroutine(t *testing.T) {
	g := New(context.Background())
	var done atomic.Int32
	for range 5 {
		g.Go(func(ctx context.Context) {
			<-ctx.Done()
			time.Sleep(10 * time.Millisecond)
			done.Add(1)
		})
	}
	g.Stop()
	require.Equal(t, int32(5), done.Load())
	require.ErrorIs(t, g.Cause(), context.Canceled)
}

// CancelWith records why the group stopped; the first cause wins.
func TestCancelWithRecordsTheCause(t *testing.T) {
	g := New(context.Background())
	require.NoError(t, g.Cause())
	why := errors.New("fenced")
	g.CancelWith(why)
	g.CancelWith(errors.New("later"))
	require.ErrorIs(t, g.Cause(), why)
}

// WaitTimeout reports whether the goroutines returned in time.
func TestWaitTimeout(t *testing.T) {
	g := New(context.Background())
	release := make(chan struct{})
	g.Go(func(context.Context) { <-release })
	require.False(t, g.WaitTimeout(20*time.Millisecond))
	close(release)
	require.True(t, g.WaitTimeout(time.Second))
}
