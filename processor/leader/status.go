package leader

import (
	"context"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// statusLoop computes every version's status each status_interval: for /api/replays and, on the
// leader, the gauges (lag, state, progress, ETA, drift: one series per version in the
// installation), the status topic (statuses of changed versions, tombstones of removed ones: one
// goroutine writes both, so a removed version's last status never lands after its tombstone) and
// auto-promotion. refreshStatus asks it for a round at once.
func (l *Leader) statusLoop(ctx context.Context) error {
	tick := time.NewTicker(l.cfg.StatusInterval)
	defer tick.Stop()
	known := map[string]string{} // key -> projection, to forget removed versions' gauges
	var waiters []chan struct{}
	var vacuumed time.Time
	for {
		if l.leading.Load() && time.Since(vacuumed) >= checkpointVacuumEvery {
			// The rows every batch updates: see store.VacuumCheckpoints. Best effort.
			vacuumed = time.Now()
			if err := l.store.VacuumCheckpoints(ctx); err != nil && ctx.Err() == nil {
				l.log.Debug("vacuum of the checkpoints failed", "err", err)
			}
		}
		if l.leading.Load() {
			// Versions whose records the brokers lost fail before their status is computed, so
			// that no status shows lag 0 above records that no longer exist.
			if _, err := l.mgr.FailLostRecords(ctx); err != nil && ctx.Err() == nil {
				l.retries.Failed("check that the brokers still have the versions' records", err)
			}
		}
		all, err := l.mgr.Status(ctx, true)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.retries.Failed("compute the statuses", err)
		} else {
			var statuses []control.Status
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
			l.auto.annotate(statuses)
			l.mu.Lock()
			l.statuses = statuses
			l.mu.Unlock()
			// The gauges are the installation's, not the instance's: only the leader exports
			// them, so that sum() over the instances counts each version once.
			leading := l.leading.Load()
			seen := map[string]bool{}
			for _, st := range statuses {
				seen[st.Key] = leading
				if leading {
					known[st.Key] = st.Projection
					l.observeStatus(st)
				}
			}
			for key, proj := range known {
				if !seen[key] {
					l.metrics.forget(proj, key)
					delete(known, key)
				}
			}
			if l.PublishStatuses(ctx, statuses, removed) {
				l.autoPromote(ctx, statuses)
			}
		}
		for _, w := range waiters {
			close(w)
		}
		waiters = nil
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case w := <-l.statusNow:
			waiters = append(waiters, w)
		}
	}
}

// checkpointVacuumEvery is how often the leader vacuums kreplay.checkpoints (autovacuum may be
// off, and visits a table once a minute at best).
const checkpointVacuumEvery = 10 * time.Second

// tombstoneHorizon is how old a removal may be for a new leader to tombstone its status record
// again: long enough for any leader change, short enough that every leader change does not
// rewrite the whole history of removals.
const tombstoneHorizon = 24 * time.Hour

// refreshStatus has the status loop compute and publish the statuses now, and waits for it (at
// most wait): a command's outcome is published after the state it changed, so that the CLI,
// which waits for the outcome, then reads the new state from the status topic.
func (l *Leader) refreshStatus(ctx context.Context, wait time.Duration) {
	t := time.NewTimer(wait)
	defer t.Stop()
	done := make(chan struct{})
	select {
	case l.statusNow <- done:
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

func (l *Leader) observeStatus(st control.Status) {
	m := l.metrics
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
