package processor

import (
	"context"
	"time"

	"github.com/kreplay/kreplay/store"
)

// statusLoop computes every version's status each status_interval: for /api/replays, the
// gauges (lag, state, progress, ETA, drift) and, on the leader, the status topic (statuses of
// changed versions, tombstones of removed ones: one goroutine writes both, so a removed
// version's last status never lands after its tombstone) and auto-promotion. refreshStatus asks
// it for a round at once.
func (p *Processor) statusLoop(ctx context.Context) error {
	tick := time.NewTicker(p.cfg.Control.StatusInterval)
	defer tick.Stop()
	known := map[string]string{} // key -> projection, to forget removed versions' gauges
	var waiters []chan struct{}
	for {
		all, err := p.mgr.Status(ctx, true)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.log.Debug("status", "err", err)
		} else {
			var statuses []Status
			var removed []string
			for _, st := range all {
				if st.State == string(store.StateRemoved) {
					// Tombstoned by the leader of the moment; a new leader clears the records
					// of recent removals only (its predecessor may have died before it did).
					if st.RemovedAt == nil || time.Since(*st.RemovedAt) < tombstoneHorizon {
						removed = append(removed, st.Key)
					}
				} else {
					statuses = append(statuses, st)
				}
			}
			p.mu.Lock()
			p.statuses = statuses
			p.mu.Unlock()
			seen := map[string]bool{}
			for _, st := range statuses {
				seen[st.Key] = true
				known[st.Key] = st.Projection
				p.observeStatus(st)
			}
			for key, proj := range known {
				if !seen[key] {
					p.metrics.forget(proj, key)
					delete(known, key)
				}
			}
			p.afterStatus(ctx, statuses, removed)
		}
		for _, w := range waiters {
			close(w)
		}
		waiters = nil
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case w := <-p.statusNow:
			waiters = append(waiters, w)
		}
	}
}

// tombstoneHorizon is how old a removal may be for a new leader to tombstone its status record
// again: long enough for any leader change, short enough that every leader change does not
// rewrite the whole history of removals.
const tombstoneHorizon = 24 * time.Hour

// refreshStatus has the status loop compute and publish the statuses now, and waits for it (at
// most wait): a command's outcome is published after the state it changed, so that the CLI,
// which waits for the outcome, then reads the new state from the status topic.
func (p *Processor) refreshStatus(ctx context.Context, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	done := make(chan struct{})
	select {
	case p.statusNow <- done:
	case <-t.C:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (p *Processor) observeStatus(st Status) {
	m := p.metrics
	m.lagEvents.WithLabelValues(st.Projection, st.Key).Set(float64(st.LagEvents))
	m.lagSeconds.WithLabelValues(st.Projection, st.Key).Set(st.LagSeconds)
	m.progress.WithLabelValues(st.Projection, st.Key).Set(st.Progress)
	eta := 0.0
	if st.ETASeconds != nil {
		eta = *st.ETASeconds
	}
	m.eta.WithLabelValues(st.Projection, st.Key).Set(eta)
	m.drift.WithLabelValues(st.Projection, st.Key).Set(b2f(st.Drift))
	m.setState(st.Projection, st.Key, store.State(st.State))
}
