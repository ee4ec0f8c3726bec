package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kreplay/kreplay/store"
)

// PromoteOptions are `kreplay promote`'s options.
type PromoteOptions struct {
	// MaxLag is the most events the version may be behind the brokers' high watermarks. Default 0.
	MaxLag int64 `json:"max_lag,omitempty"`
	// Wait is how long to wait for the version to be tailing with lag <= MaxLag (0: not at all).
	Wait Duration `json:"wait,omitempty"`
	// Verified refuses the promotion unless the version's last verify, against the current live
	// version, passed.
	Verified bool `json:"verified,omitempty"`
}

// SwapReport is what a promote or rollback did.
type SwapReport struct {
	Projection      string  `json:"projection"`
	From            string  `json:"from"`
	To              string  `json:"to"`
	Kind            string  `json:"kind"`
	Attempts        int     `json:"attempts"`
	SwapDurationMS  float64 `json:"swap_duration_ms"`
	WaitedSeconds   float64 `json:"waited_seconds"`
	PreviousRetired bool    `json:"previous_retired"`
	// PreviousState is the previous live version's state now: retired, or paused or failed
	// (it resumes as retired).
	PreviousState string `json:"previous_state,omitempty"`
}

// swapBudget bounds the swap's retries (lock_timeout hits, the new version briefly behind)
// when the caller gives no --wait.
const swapBudget = 30 * time.Second

// Promote makes a tailing version live: when its lag is at most MaxLag (waiting up to Wait for
// that), the views of its projection are repointed to it in one transaction (see store.Swap);
// the previous live version is retired and keeps tailing for rollback. A retired version (one
// that was live before and keeps tailing) can be promoted again.
func (m *Manager) Promote(ctx context.Context, key string, opts PromoteOptions) (*SwapReport, error) {
	v, err := m.version(ctx, key)
	if err != nil {
		return nil, err
	}
	proj, err := m.p.store.Projection(ctx, v.Projection)
	if err != nil {
		return nil, err
	}
	if proj.Live == key {
		return nil, invalid("promote %s: it is already the live version of %s", key, v.Projection)
	}
	if opts.Verified {
		last, err := m.p.store.LastVerification(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, invalid("promote %s --verified: it was never verified; run kreplay verify %s first", key, key)
		case err != nil:
			return nil, err
		case last.Against != proj.Live:
			return nil, invalid("promote %s --verified: its last verify was against %s, but %s is live now; verify again", key, last.Against, proj.Live)
		case !last.Passed:
			return nil, invalid("promote %s --verified: its last verify (%s) found differences", key, last.At.Format(time.RFC3339))
		}
	}
	start := time.Now()
	deadline := start.Add(opts.Wait.D())
	for {
		v, err = m.p.store.Version(ctx, key)
		if err != nil {
			return nil, err
		}
		lag, lerr := m.lagEvents(ctx, v)
		if lerr != nil {
			return nil, lerr
		}
		following := v.State == store.StateTailing || v.State == store.StateRetired
		if following && lag <= opts.MaxLag {
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
			return nil, invalid("promote %s: its lag is %d events, more than --max-lag %d%s", key, lag, opts.MaxLag, waitHint(opts.Wait.D()))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	waited := time.Since(start)
	return m.swap(ctx, key, store.SwapPromote, promotable, max(swapBudget, time.Until(deadline)), waited)
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
func (m *Manager) Rollback(ctx context.Context, projection string) (*SwapReport, error) {
	if _, err := m.p.store.Projection(ctx, projection); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			if v, verr := m.p.store.Version(ctx, projection); verr == nil {
				return nil, invalid("rollback takes a projection, not a version: %q is a version of projection %q (kreplay rollback %s)", projection, v.Projection, v.Projection)
			}
			return nil, invalid("rollback: unknown projection %q", projection)
		}
		return nil, err
	}
	key, err := m.p.store.NewestRetired(ctx, projection)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &invalidError{msg: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	return m.swap(ctx, key, store.SwapRollback, []store.State{store.StateRetired}, swapBudget, 0)
}

func (m *Manager) swap(ctx context.Context, key string, kind store.SwapKind, allowed []store.State, budget, waited time.Duration) (*SwapReport, error) {
	sctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	res, err := m.p.store.Swap(sctx, key, kind, allowed)
	if err != nil {
		var terr *store.TransitionError
		if errors.As(err, &terr) {
			return nil, err
		}
		return nil, fmt.Errorf("%s %s: %w", kind, key, err)
	}
	m.p.metrics.promotions.WithLabelValues(res.Projection, string(kind)).Inc()
	m.p.metrics.swapDuration.WithLabelValues(res.Projection).Observe(res.Duration.Seconds())
	m.p.log.Info("live version switched", "projection", res.Projection, "kind", kind, "from", res.From, "to", res.To,
		"attempts", res.Attempts, "swap_ms", float64(res.Duration.Microseconds())/1000)
	rep := &SwapReport{Projection: res.Projection, From: res.From, To: res.To, Kind: string(kind), Attempts: res.Attempts,
		SwapDurationMS: float64(res.Duration.Microseconds()) / 1000, WaitedSeconds: waited.Seconds()}
	if res.From != "" {
		rep.PreviousState = string(store.StateRetired)
		if prev, err := m.p.store.Version(ctx, res.From); err == nil {
			rep.PreviousState = string(prev.State)
		}
		rep.PreviousRetired = rep.PreviousState == string(store.StateRetired)
	}
	return rep, nil
}

// lagEvents is a version's lag: the sum over its partitions of high watermark minus next offset.
func (m *Manager) lagEvents(ctx context.Context, v *store.Version) (int64, error) {
	ends, _, err := m.p.partitionBounds(ctx, v.Topics())
	if err != nil {
		return 0, fmt.Errorf("list offsets: %w", err)
	}
	cps, err := m.p.store.Checkpoints(ctx, v.Key)
	if err != nil {
		return 0, err
	}
	next := map[store.TopicPartition]int64{}
	for _, c := range cps {
		next[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] = c.NextOffset
	}
	var lag int64
	for tp, end := range ends {
		lag += max(0, end-next[tp])
	}
	return lag, nil
}

// Remove stops a version on every instance, drops its schema, deletes its consumer group and
// marks it removed. The live version cannot be removed.
func (m *Manager) Remove(ctx context.Context, key string) (*store.Version, error) {
	if _, err := m.version(ctx, key); err != nil {
		return nil, err
	}
	v, err := m.p.store.RemoveVersion(ctx, key)
	if err != nil {
		if errors.Is(err, store.ErrInvalidTransition) {
			return nil, &invalidError{msg: err.Error()}
		}
		return nil, err
	}
	if err := m.p.store.DropVersion(ctx, key); err != nil {
		return nil, fmt.Errorf("remove %s: drop its schema: %w", key, err)
	}
	if err := m.deleteGroup(ctx, GroupName(v.Projection, key)); err != nil {
		return nil, fmt.Errorf("remove %s: %w", key, err)
	}
	m.p.metrics.forget(v.Projection, key)
	m.p.log.Info("version removed", "projection", v.Projection, "version", key)
	return v, nil
}

// deleteGroup deletes a version's consumer group once its members have left (the runners of
// every instance stop when they see the version removed).
func (m *Manager) deleteGroup(ctx context.Context, group string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return retryUntil(ctx, func() error {
		resp, err := m.p.admin.DeleteGroup(ctx, group)
		if err == nil {
			err = resp.Err
		}
		if err != nil && isGroupGone(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete consumer group %s: %w", group, err)
		}
		return nil
	}, func(err error) bool { return true })
}

func isGroupGone(err error) bool { return errors.Is(err, kerr.GroupIDNotFound) }

// finishRemovals completes removals that a crash interrupted: versions marked removed whose
// schema or consumer group still exists.
func (m *Manager) finishRemovals(ctx context.Context) {
	versions, err := m.p.store.Versions(ctx)
	if err != nil {
		return
	}
	for _, v := range versions {
		if v.State != store.StateRemoved {
			continue
		}
		tables, err := m.p.store.Tables(ctx, v.Key)
		if err != nil {
			continue
		}
		cps, _ := m.p.store.Checkpoints(ctx, v.Key)
		if len(tables) == 0 && len(cps) == 0 {
			continue
		}
		m.p.log.Info("finishing an interrupted remove", "version", v.Key)
		if _, err := m.Remove(ctx, v.Key); err != nil {
			m.p.log.Warn("could not finish an interrupted remove", "version", v.Key, "err", err)
		}
	}
}
