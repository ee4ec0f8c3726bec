package leader

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/internal/startstop"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// Config is what the leader needs to know.
type Config struct {
	// ControlTopic is where commands arrive (one partition).
	ControlTopic string
	// StatusTopic is where outcomes and statuses are published.
	StatusTopic string
	// Secret, when set, is the HMAC key commands must be signed with.
	Secret string
	// Instance names this instance in outcomes (host:pid).
	Instance string
	// StatusInterval is how often the statuses are computed. Defaults to 2s.
	StatusInterval time.Duration
	// Installation is the installation's name: commands addressed to another one are ignored,
	// and the catalog is recorded under it (CheckInstallation).
	Installation string
	// TakeOver lets CheckInstallation take the topics from another catalog (serve --take-over).
	TakeOver bool
	// ClientOpts makes the options of the leader's control-topic reader (one for each client: a
	// client's hooks, such as its kprom metrics, are its own).
	ClientOpts func() []kgo.Opt
	// StatusClientOpts makes the options of a client that follows and publishes the catalogs'
	// announcements on the status topic (see CheckInstallation).
	StatusClientOpts func() []kgo.Opt
}

// Leader computes the versions' statuses on every instance and, while it holds the leadership,
// executes the control topic's commands and publishes outcomes and statuses. Run it with Run.
type Leader struct {
	cfg      Config
	store    *store.Store
	producer *kgo.Client
	mgr      *lifecycle.Manager
	log      *slog.Logger
	retries  *retry.Logger
	metrics  *metrics
	work     *startstop.Group // auto-promotions, under Run

	guard     *guard // set by CheckInstallation
	leading   atomic.Bool
	published statusPublisher
	auto      autoPromoter
	statusNow chan chan struct{} // refreshStatus -> statusLoop

	mu       sync.Mutex
	statuses []control.Status
}

// New returns a leader; it does nothing until Run. producer is the processor's producer (it
// writes outcomes and statuses); mgr executes the commands; reg receives the control plane's
// metrics.
func New(cfg Config, st *store.Store, producer *kgo.Client, mgr *lifecycle.Manager, log *slog.Logger, reg prometheus.Registerer) *Leader {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 2 * time.Second
	}
	return &Leader{
		cfg: cfg, store: st, producer: producer, mgr: mgr, log: log,
		retries:   retry.NewLogger(log, slog.LevelWarn),
		metrics:   newMetrics(reg),
		auto:      autoPromoter{tried: map[string]struct{}{}, held: map[string]string{}},
		statusNow: make(chan chan struct{}),
	}
}

// Statuses are the statuses the status loop computed last (nil before the first).
func (l *Leader) Statuses() []control.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.statuses
}

// Run computes the statuses every StatusInterval and competes for the leadership until ctx
// ends; it returns once everything it started has stopped. It returns a *ClashError when
// another catalog takes the control and status topics over. CheckInstallation must have
// succeeded first.
func (l *Leader) Run(ctx context.Context) error {
	if l.guard == nil {
		return errNoGuard
	}
	cl, err := kgo.NewClient(l.guardOpts(l.guard.pos)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	l.guard.cl = cl
	l.work = startstop.New(ctx)
	defer l.work.Stop()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.followInstallation(gctx) })
	g.Go(func() error { return l.statusLoop(gctx) })
	g.Go(func() error { return l.elect(gctx) })
	return g.Wait()
}

// Leading reports whether this instance holds the leadership now.
func (l *Leader) Leading() bool { return l.leading.Load() }

// electionEvery is how often an instance that does not lead tries to take the leadership.
const electionEvery = 2 * time.Second

// elect competes for the leadership until ctx ends, and leads whenever it holds it: the leader
// is the holder of a PostgreSQL advisory lock on a connection of its own (see store.TryLead);
// when that connection fails, another instance takes over.
func (l *Leader) elect(ctx context.Context) error {
	backoff := retry.NewBackoff(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		lease, err := l.store.TryLead(ctx)
		if err != nil && ctx.Err() == nil {
			l.retries.Failed("leader election", err)
		}
		if lease == nil {
			retry.Sleep(ctx, electionEvery)
			continue
		}
		l.log.Info("this instance leads: it executes control commands and publishes status")
		g := startstop.New(ctx)
		g.Go(func(gctx context.Context) {
			select {
			case <-lease.Lost():
				l.log.Warn("leadership lost (its PostgreSQL connection failed)")
				g.Cancel()
			case <-gctx.Done():
			}
		})
		g.Go(l.announceLoop)
		l.leading.Store(true)
		err = l.lead(g.Context())
		l.leading.Store(false)
		l.metrics.forgetVersions() // the next leader exports them (the status loop forgets them too)
		g.Stop()
		lease.Release()
		if err != nil && ctx.Err() == nil {
			l.retries.Failed("control loop", err)
			retry.Sleep(ctx, backoff.Next())
		} else {
			backoff.Reset()
		}
	}
	return nil
}

// lead consumes the control topic from the position recorded in the catalog until ctx ends.
// Before it executes a command, it looks ahead at what it has fetched already, so that a cancel
// published after a command that has not started yet takes effect (see lookAhead).
func (l *Leader) lead(ctx context.Context) error {
	l.mgr.FinishRemovals(ctx)
	topic := l.cfg.ControlTopic
	pos, err := l.store.ControlPosition(ctx, topic)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(l.cfg.ClientOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(pos)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	r := &controlReader{cl: cl, applied: map[int64]bool{}}
	for {
		e := l.next(ctx, r)
		if e == nil {
			return nil
		}
		if err := l.lookAhead(ctx, r); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		out, answer := l.execute(ctx, e)
		if err := ctx.Err(); err != nil {
			return err
		}
		if answer {
			if out.OK {
				l.refreshStatus(ctx, 5*time.Second)
			}
			if err := l.publishOutcome(ctx, out); err != nil {
				return err
			}
		}
		if err := l.catalog("record the control position").Do(ctx, func(ctx context.Context) error {
			return l.store.SetControlPosition(ctx, topic, e.rec.Offset+1)
		}); err != nil {
			return err
		}
		r.pending = r.pending[1:]
		delete(r.applied, e.rec.Offset)
	}
}

// catalog is the retry policy of the leader's catalog writes: transient errors are retried.
func (l *Leader) catalog(what string) retry.Policy {
	return retry.Policy{Retryable: store.IsTransient, Log: l.retries, What: what}
}
