package processor

import (
	"context"
	"time"

	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/internal/startstop"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// reconcileEvery is how often the runners are reconciled with the catalog without a
// notification.
const reconcileEvery = 5 * time.Second

// reconcileLoop keeps this instance's runners in line with the catalog: a runner for every
// running version, none for the others. It wakes on every catalog notification (LISTEN) and
// every reconcileEvery.
func (p *Processor) reconcileLoop(ctx context.Context) error {
	notes := make(chan struct{}, 1)
	listener := startstop.New(ctx)
	defer listener.Stop()
	listener.Go(func(ctx context.Context) { p.listen(ctx, notes) })
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	for {
		if err := p.reconcile(ctx); err != nil && ctx.Err() == nil {
			p.retries.Failed("reconcile with the catalog", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-notes:
		case <-tick.C:
		}
	}
}

// reconcile starts a runner for each running version that has none, gives the others the
// catalog's view of their version, and stops the runners of versions that stopped running.
func (p *Processor) reconcile(ctx context.Context) error {
	versions, err := p.store.Versions(ctx)
	if err != nil {
		return err
	}
	want := map[string]*store.Version{}
	for _, v := range versions {
		if v.State.Running() {
			want[v.Key] = v
		}
	}
	p.mu.Lock()
	var stopping []*runner
	for key, r := range p.runners {
		if _, ok := want[key]; !ok {
			stopping = append(stopping, r)
			delete(p.runners, key)
		}
	}
	for key, v := range want {
		if r, ok := p.runners[key]; ok {
			r.update(v)
			continue
		}
		p.runners[key] = p.startRunner(v)
		p.log.Info("version running", "projection", v.Projection, "version", v.Key, "state", v.State)
	}
	p.mu.Unlock()
	for _, r := range stopping {
		p.work.Go(func(context.Context) {
			r.stop()
			r.log.Info("version stopped on this instance")
		})
	}
	return nil
}

// stopAllRunners stops every runner (each finishes its batch in flight and commits) and waits
// for everything the work group runs.
func (p *Processor) stopAllRunners() {
	p.mu.Lock()
	rs := p.runners
	p.runners = map[string]*runner{}
	p.mu.Unlock()
	for _, r := range rs {
		p.work.Go(func(context.Context) { r.stop() })
	}
	p.work.Stop()
}

// listen forwards catalog notifications (LISTEN kreplay_catalog) until ctx ends, reconnecting
// after failures.
func (p *Processor) listen(ctx context.Context, notes chan<- struct{}) {
	backoff := retry.NewBackoff(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		conn, err := p.store.Pool().Acquire(ctx)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+store.NotifyChannel)
			if err == nil {
				backoff.Reset()
			}
			for err == nil {
				_, err = conn.Conn().WaitForNotification(ctx)
				if err == nil {
					select {
					case notes <- struct{}{}:
					default:
					}
				}
			}
			conn.Hijack().Close(context.WithoutCancel(ctx)) //nolint:errcheck // a listening connection is not returned to the pool
		}
		if ctx.Err() == nil {
			p.retries.Failed("listen to catalog notifications", err)
		}
		retry.Sleep(ctx, backoff.Next()) // meanwhile reconcile runs every reconcileEvery anyway
	}
}

// probeLoop checks PostgreSQL and Kafka every second for /readyz.
func (p *Processor) probeLoop(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		err := p.store.Ping(ctx)
		if ctx.Err() == nil {
			p.health.postgres(err == nil, err)
		}
		kctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = p.adminCl.Ping(kctx)
		cancel()
		if ctx.Err() == nil {
			p.health.kafka(err == nil, err)
		}
	}
}

// projectionConfig is the operational settings (batch size, workers, idle timeout) of a
// projection from the config file; a projection no longer in the file gets the defaults.
func (p *Processor) projectionConfig(name string) topology.Projection {
	if pc, ok := p.cfg.Projection(name); ok {
		return *pc
	}
	pc := topology.Projection{Name: name}
	c := topology.Config{Projections: []topology.Projection{pc}}
	c.SetDefaults()
	return c.Projections[0]
}
