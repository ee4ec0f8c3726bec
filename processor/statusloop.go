package processor

import (
	"context"
	"time"

	"github.com/kreplay/kreplay/store"
)

// statusLoop computes every version's status each status_interval: for /api/replays, the
// gauges (lag, state, progress, ETA, drift) and, on the leader, the status topic and
// auto-promotion.
func (p *Processor) statusLoop(ctx context.Context) error {
	tick := time.NewTicker(p.cfg.Control.StatusInterval)
	defer tick.Stop()
	known := map[string]string{} // key -> projection, to forget removed versions' gauges
	for {
		statuses, err := p.mgr.Status(ctx, false)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.log.Debug("status", "err", err)
		} else {
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
			p.afterStatus(ctx, statuses)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
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
