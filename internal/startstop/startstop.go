// Package startstop is the one lifecycle every long-running part of kreplay uses (runners,
// sessions, the leadership, the status loop, the HTTP server), after river's startstop: a part
// is started with a context, owns the goroutines it starts, and is stopped by canceling that
// context and waiting for every one of them. No goroutine of kreplay's outlives the part that
// started it.
//
//	g := startstop.New(ctx)
//	g.Go(func(ctx context.Context) { ... until ctx ends ... })
//	...
//	g.Stop() // cancel, then wait for every goroutine started with Go
package startstop

import (
	"context"
	"sync"
	"time"
)

// Group owns a set of goroutines that share a context. The zero value is not usable: call New.
type Group struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
}

// New returns a group whose context is derived from parent: it ends when parent ends or Stop
// (or Cancel) is called.
func New(parent context.Context) *Group {
	ctx, cancel := context.WithCancelCause(parent)
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is the group's context: canceled by Cancel and Stop.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn in a goroutine the group owns, with the group's context.
func (g *Group) Go(fn func(ctx context.Context)) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn(g.ctx)
	}()
}

// Cancel cancels the group's context without waiting.
func (g *Group) Cancel() { g.cancel(nil) }

// CancelWith cancels the group's context without waiting, recording why: Cause returns err
// (the first cause recorded wins).
func (g *Group) CancelWith(err error) { g.cancel(err) }

// Cause is why the group's context ended: nil while it runs, the error given to CancelWith,
// or context.Canceled.
func (g *Group) Cause() error { return context.Cause(g.ctx) }

// Wait waits for every goroutine started with Go to return.
func (g *Group) Wait() { g.wg.Wait() }

// WaitTimeout waits like Wait, for at most d; it reports whether every goroutine returned.
func (g *Group) WaitTimeout(d time.Duration) bool {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Stop cancels the group's context and waits for its goroutines.
func (g *Group) Stop() {
	g.cancel(nil)
	g.wg.Wait()
}
