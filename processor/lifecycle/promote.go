package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// swapBudget bounds the swap's retries (lock_timeout hits, the new version briefly behind)
// when the caller gives no --wait.
const swapBudget = 30 * time.Second

// Promote makes a tailing version live: when its lag is at most MaxLag (waiting up to Wait for
// that), the views of its projection are repointed to it in one transaction (see store.Swap);
// the previous live version is retired and keeps tailing for rollback. A retired version (one
// that was live before and keeps tailing) can be promoted again.
func (m *Manager) Promote(ctx context.Context, key string, opts control.PromoteOptions) (*control.SwapReport, error) {
	v, err := m.version(ctx, key)
	if err != nil {
		return nil, err
	}
	proj, err := m.store.Projection(ctx, v.Projection)
	if err != nil {
		return nil, err
	}
	if proj.Live == key {
		return nil, control.Invalid("promote %s: it is already the live version of %s", key, v.Projection)
	}
	if opts.Verified {
		last, err := m.store.LastVerification(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, control.Invalid("promote %s --verified: it was never verified; run kreplay verify %s first", key, key)
		case err != nil:
			return nil, err
		case last.Against != proj.Live:
			return nil, control.Invalid("promote %s --verified: its last verify was against %s, but %s is live now; verify again", key, last.Against, proj.Live)
		case !last.Passed:
			return nil, control.Invalid("promote %s --verified: its last verify (%s) found differences", key, last.At.Format(time.RFC3339))
		}
	}
	// Refuse a breaking shape change before waiting for the lag (the swap checks again, in its
	// transaction).
	if !opts.AllowShapeChange {
		changes, err := m.store.ShapeChanges(ctx, key)
		if err != nil {
			return nil, err
		}
		if breaking := store.BreakingChanges(changes); len(breaking) > 0 {
			return nil, control.AsInvalid(&store.ShapeChangeError{Key: key, Changes: breaking})
		}
	}
	start := time.Now()
	deadline := start.Add(opts.Wait.D())
	for {
		v, err = m.store.Version(ctx, key)
		if err != nil {
			return nil, err
		}
		lag, liveLag, lerr := m.lagBeside(ctx, v, proj.Live)
		if lerr != nil {
			return nil, lerr
		}
		following := v.State == store.StateTailing || v.State == store.StateRetired
		if following && CaughtUp(lag, liveLag, opts.MaxLag) {
			break
		}
		if time.Now().After(deadline) {
			if !following {
				terr := &store.TransitionError{Key: key, Action: "promote", State: v.State, Allowed: promotable}
				if v.State == store.StateReplaying {
					return nil, fmt.Errorf("%w; it is tailing once it has caught up%s", terr, waitHint(opts.Wait.D()))
				}
				return nil, terr
			}
			return nil, control.Invalid("promote %s: its lag is %d events, more than --max-lag %d%s", key, lag, opts.MaxLag, waitHint(opts.Wait.D()))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	waited := time.Since(start)
	return m.swap(ctx, key, store.SwapPromote, promotable, max(swapBudget, time.Until(deadline)), waited, store.SwapOptions{AllowShapeChange: opts.AllowShapeChange})
}

// promotable are the states promote accepts: caught up and following the log.
var promotable = []store.State{store.StateTailing, store.StateRetired}

func waitHint(d time.Duration) string {
	if d == 0 {
		return " (pass --wait to wait for it)"
	}
	return fmt.Sprintf(" after waiting %s", d)
}

// Rollback makes the projection's newest retired version live again, the same swap as promote.
// It is the way back in an emergency: never refused for the shape of the views (its report
// lists the change).
func (m *Manager) Rollback(ctx context.Context, projection string) (*control.SwapReport, error) {
	if _, err := m.store.Projection(ctx, projection); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			if v, verr := m.store.Version(ctx, projection); verr == nil {
				return nil, control.Invalid("rollback takes a projection, not a version: %q is a version of projection %q (kreplay rollback %s)", projection, v.Projection, v.Projection)
			}
			return nil, control.Invalid("rollback: unknown projection %q", projection)
		}
		return nil, err
	}
	key, err := m.store.NewestRetired(ctx, projection)
	if errors.Is(err, store.ErrNotFound) {
		return nil, control.AsInvalid(err)
	}
	if err != nil {
		return nil, err
	}
	return m.swap(ctx, key, store.SwapRollback, []store.State{store.StateRetired}, swapBudget, 0, store.SwapOptions{})
}

func (m *Manager) swap(ctx context.Context, key string, kind store.SwapKind, allowed []store.State, budget, waited time.Duration, opts store.SwapOptions) (*control.SwapReport, error) {
	sctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	res, err := m.store.Swap(sctx, key, kind, allowed, opts)
	if err != nil {
		var terr *store.TransitionError
		if errors.As(err, &terr) {
			return nil, err
		}
		var serr *store.ShapeChangeError
		if errors.As(err, &serr) {
			return nil, control.AsInvalid(serr)
		}
		return nil, fmt.Errorf("%s %s: %w", kind, key, err)
	}
	m.metrics.promotions.WithLabelValues(res.Projection, string(kind)).Inc()
	m.metrics.swapDuration.WithLabelValues(res.Projection).Observe(res.Duration.Seconds())
	m.log.Info("live version switched", "projection", res.Projection, "kind", kind, "from", res.From, "to", res.To,
		"attempts", res.Attempts, "swap_ms", float64(res.Duration.Microseconds())/1000, "routed", res.Routed)
	for _, c := range res.ShapeChanges {
		m.log.Info("live view shape changed", "projection", res.Projection, "kind", kind, "change", c.String(), "breaking", c.Breaking())
	}
	rep := &control.SwapReport{Projection: res.Projection, From: res.From, To: res.To, Kind: string(kind), Attempts: res.Attempts,
		SwapDurationMS: float64(res.Duration.Microseconds()) / 1000, WaitedSeconds: waited.Seconds(), ShapeChanges: res.ShapeChanges, Routed: res.Routed}
	if res.From != "" {
		rep.PreviousState = string(store.StateRetired)
		if prev, err := m.store.Version(ctx, res.From); err == nil {
			rep.PreviousState = string(prev.State)
		}
		rep.PreviousRetired = rep.PreviousState == string(store.StateRetired)
	}
	return rep, nil
}

// CaughtUp says whether a version with lag events is caught up enough to be promoted: its lag is
// at most maxLag, or at most the live version's (liveLag; -1 when there is none). While events
// keep arriving, a live version of ordering global always has some lag: the merge holds the
// newest events for max_lateness (see topology.Projection.MaxLateness). A new version that holds
// the same events is as caught up as the live one, and the swap itself never lets readers go
// back (store.Swap requires the new version at or past the live one's offsets).
func CaughtUp(lag, liveLag, maxLag int64) bool {
	return lag <= maxLag || (liveLag >= 0 && lag <= liveLag)
}

// lagBeside is v's lag as its status measures it (see PartitionLag: the sum over its partitions
// of last stable offset minus next offset) and the live version's (live; -1 when "" or v
// itself), measured against the same end offsets.
func (m *Manager) lagBeside(ctx context.Context, v *store.Version, live string) (lag, liveLag int64, err error) {
	var lv *store.Version
	if live != "" && live != v.Key {
		if lv, err = m.store.Version(ctx, live); err != nil {
			return 0, 0, err
		}
	}
	topics := v.Topics()
	if lv != nil {
		topics = append(slices.Clone(topics), lv.Topics()...)
		slices.Sort(topics)
		topics = slices.Compact(topics)
	}
	ends, err := EndOffsets(ctx, m.admin, topics...)
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets: %w", err)
	}
	sum := func(x *store.Version) (int64, error) {
		cps, err := m.store.Checkpoints(ctx, x.Key)
		if err != nil {
			return 0, err
		}
		var n int64
		for _, ps := range partitionsLag(x, ends, cps) {
			n += ps.Lag
		}
		return n, nil
	}
	if lag, err = sum(v); err != nil {
		return 0, 0, err
	}
	liveLag = -1
	if lv != nil {
		if liveLag, err = sum(lv); err != nil {
			return 0, 0, err
		}
	}
	return lag, liveLag, nil
}
