package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Options configure a Processor beyond the config file.
type Options struct {
	// Logger receives the processor's logs. Defaults to discarding them.
	Logger *slog.Logger
	// Registry is where metrics are registered. Defaults to a new registry.
	Registry *prometheus.Registry
	// ShutdownTimeout bounds how long a batch in flight may take to finish at shutdown or
	// revocation before it is rolled back. Defaults to 15s.
	ShutdownTimeout time.Duration
}

// Processor is `kreplay serve`: it keeps every running version of every projection applied
// from Kafka into PostgreSQL, executes control commands, publishes status and serves HTTP.
// Run it with Run; several processors (instances) with the same config share the work through
// Kafka consumer groups.
type Processor struct {
	cfg             *topology.Config
	log             *slog.Logger
	reg             *prometheus.Registry
	metrics         *metrics
	health          *health
	shutdownTimeout time.Duration

	store    *store.Store
	kopts    []kgo.Opt
	adminCl  *kgo.Client
	admin    *kadm.Client
	producer *kgo.Client
	embedded *Embedded
	mgr      *Manager

	started chan struct{}

	mu       sync.Mutex
	runners  map[string]*runner
	statuses []Status
	httpAddr string
	tsCache  tsCache

	instance  string
	abrupt    atomic.Bool // Kill: stop without finishing batches or committing offsets
	leading   atomic.Bool
	published statusPublisher
	statusNow chan chan struct{} // refreshStatus -> statusLoop
	bg        sync.WaitGroup     // runners being stopped, auto-promotions: Run waits for them
	autoMu    sync.Mutex
	autoTried map[string]struct{}
	autoBusy  bool
}

// New returns a processor for the config (already loaded and validated). It connects nothing
// until Run.
func New(cfg *topology.Config, opts Options) *Processor {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 15 * time.Second
	}
	m := newMetrics(opts.Registry)
	return &Processor{
		cfg: cfg, log: opts.Logger, reg: opts.Registry, metrics: m,
		health:          &health{m: m},
		shutdownTimeout: opts.ShutdownTimeout,
		started:         make(chan struct{}),
		runners:         map[string]*runner{},
		tsCache:         tsCache{m: map[recordAt]time.Time{}},
		instance:        instanceName(),
		autoTried:       map[string]struct{}{},
		statusNow:       make(chan chan struct{}),
	}
}

// Started is closed once Run has validated the config against PostgreSQL, bootstrapped the
// projections and started consuming.
func (p *Processor) Started() <-chan struct{} { return p.started }

// Manager is the replay manager of a started processor.
func (p *Processor) Manager() *Manager { return p.mgr }

// Store is the processor's store (after Started).
func (p *Processor) Store() *store.Store { return p.store }

// Brokers are the seed brokers the processor uses (the embedded broker's address with
// brokers: embedded), after Started.
func (p *Processor) Brokers() []string { return p.cfg.Kafka.Brokers }

// Assigned is the number of partitions of a version this instance consumes now (0 when another
// member owns them or the version does not run).
func (p *Processor) Assigned(key string) int {
	p.mu.Lock()
	r := p.runners[key]
	p.mu.Unlock()
	if r == nil {
		return 0
	}
	return r.assigned()
}

// Leading reports whether this instance executes control commands.
func (p *Processor) Leading() bool { return p.leading.Load() }

// Run runs the processor until ctx ends, then shuts down gracefully: batches in flight finish,
// offsets are committed, consumers leave their groups. It returns nil after a clean shutdown.
func (p *Processor) Run(ctx context.Context) error {
	// HTTP first: /healthz answers (and /readyz says why not ready) while setup waits for
	// PostgreSQL and Kafka, so that an orchestrator does not kill a process that is waiting.
	srv, err := p.listenHTTP(ctx)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", p.cfg.HTTP.Listen, err)
	}
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	httpDone := make(chan struct{})
	if srv != nil {
		p.mu.Lock()
		p.httpAddr = srv.ln.Addr().String()
		p.mu.Unlock()
		go func() {
			defer close(httpDone)
			if err := p.serveHTTP(httpCtx, srv); err != nil {
				p.log.Error("http server stopped", "listen", p.cfg.HTTP.Listen, "err", err)
			}
		}()
	} else {
		close(httpDone)
	}
	defer func() {
		stopHTTP()
		<-httpDone
	}()

	if err := p.setup(ctx); err != nil {
		p.close()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer p.close()
	runCtx, stopRunners := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRunners()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.reconcileLoop(gctx, runCtx) })
	g.Go(func() error { return p.statusLoop(gctx) })
	g.Go(func() error { return p.probeLoop(gctx) })
	g.Go(func() error { return p.controlLoop(gctx) })
	close(p.started)
	p.log.Info("kreplay serving", "brokers", p.cfg.Kafka.Brokers, "http", p.HTTPAddr())
	err = g.Wait()
	p.stopAllRunners()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	p.log.Info("kreplay stopped")
	return nil
}

func (p *Processor) setup(ctx context.Context) error {
	cfg := p.cfg
	if len(cfg.Kafka.Brokers) == 1 && cfg.Kafka.Brokers[0] == "embedded" {
		e, err := StartEmbedded(cfg, p.log)
		if err != nil {
			return err
		}
		p.embedded = e
		cfg.Kafka.Brokers = e.Addrs
		p.log.Info("embedded Kafka broker started (in memory: its data is lost at exit)", "addr", e.Addrs[0])
	}
	kopts, err := KafkaOpts(cfg.Kafka, cfg.Kafka.Brokers, cfg.Kafka.ClientID, slog.New(levelHandler{p.log.Handler(), slog.LevelWarn}))
	if err != nil {
		return err
	}
	p.kopts = kopts
	if p.adminCl, err = kgo.NewClient(p.kafkaOpts(cfg.Kafka.ClientID + "-admin")...); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	p.admin = kadm.NewClient(p.adminCl)
	if p.producer, err = kgo.NewClient(p.kafkaOpts(cfg.Kafka.ClientID + "-producer")...); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	p.store, err = store.Open(ctx, store.Config{
		URL: cfg.Postgres.URL, LiveSchema: cfg.Postgres.LiveSchema, MaxConns: cfg.Postgres.MaxConns,
		LockTimeout: cfg.Postgres.LockTimeout, ReaderRole: cfg.Postgres.ReaderRole,
	}, p.log)
	if err != nil {
		return err
	}
	if err := p.waitFor(ctx, "postgres", func(ctx context.Context) error {
		_, err := p.store.Migrate(ctx)
		return err
	}, store.IsTransient); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	p.health.postgres(true, nil)
	p.log.Info("postgres ready: catalog up to date")
	if err := p.waitFor(ctx, "kafka", p.ensureTopics, func(err error) bool { return !kafkaRefused(err) }); err != nil {
		if kafkaRefused(err) {
			return fmt.Errorf("kafka refused kreplay's credentials or permissions (check kafka.sasl, kafka.tls and the ACLs): %w", err)
		}
		return fmt.Errorf("kafka: %w", err)
	}
	p.health.kafka(true, nil)
	p.log.Info("kafka ready: control, status and dead-letter topics exist")
	p.mgr = newManager(p)
	names := make([]string, 0, len(cfg.Projections))
	for _, pc := range cfg.Projections {
		names = append(names, pc.Name)
	}
	p.metrics.initSeries(names)

	var errs []error
	for _, pc := range cfg.Projections {
		def, err := cfg.Definition(pc.Name)
		if err == nil {
			err = p.store.ValidateDefinition(ctx, def)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config refused by PostgreSQL (no version was started):\n%w", err)
	}
	for _, pc := range cfg.Projections {
		if err := p.mgr.bootstrap(ctx, pc.Name); err != nil {
			return err
		}
	}
	return nil
}

// waitFor runs fn until it succeeds, logging while a dependency is unreachable; an error
// retryable rejects (a wrong password, say) ends the wait at once.
func (p *Processor) waitFor(ctx context.Context, what string, fn func(context.Context) error, retryable func(error) bool) error {
	logged := time.Time{}
	return retryUntil(ctx, func() error {
		actx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		err := fn(actx)
		if err != nil && retryable(err) && time.Since(logged) > 10*time.Second {
			p.log.Warn("waiting for "+what, "err", err)
			logged = time.Now()
		}
		return err
	}, retryable)
}

func (p *Processor) close() {
	if p.producer != nil {
		p.producer.Close()
	}
	if p.adminCl != nil {
		p.adminCl.Close()
	}
	if p.store != nil {
		p.store.Close()
	}
	if p.embedded != nil {
		p.embedded.Close()
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

// reconcileLoop keeps this instance's runners in line with the catalog: a runner for every
// running version, none for the others. It wakes on every catalog notification and every 5s.
func (p *Processor) reconcileLoop(ctx, runCtx context.Context) error {
	notes := make(chan struct{}, 1)
	go p.listen(ctx, notes)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		if err := p.reconcile(runCtx); err != nil && ctx.Err() == nil {
			p.log.Warn("reconcile with the catalog failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-notes:
		case <-tick.C:
		}
	}
}

func (p *Processor) reconcile(runCtx context.Context) error {
	versions, err := p.store.Versions(runCtx)
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
		p.runners[key] = p.startRunner(runCtx, v)
		p.log.Info("version running", "projection", v.Projection, "version", v.Key, "state", v.State)
	}
	p.mu.Unlock()
	for _, r := range stopping {
		p.bg.Go(func() {
			r.stop()
			r.log.Info("version stopped on this instance")
		})
	}
	return nil
}

func (p *Processor) stopAllRunners() {
	p.mu.Lock()
	rs := p.runners
	p.runners = map[string]*runner{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(r.stop)
	}
	wg.Wait()
	p.bg.Wait()
}

// listen forwards catalog notifications (LISTEN kreplay_catalog) until ctx ends, reconnecting
// after failures.
func (p *Processor) listen(ctx context.Context, notes chan<- struct{}) {
	for ctx.Err() == nil {
		conn, err := p.store.Pool().Acquire(ctx)
		if err == nil {
			_, err = conn.Exec(ctx, "LISTEN "+store.NotifyChannel)
			for err == nil {
				_, err = conn.Conn().WaitForNotification(ctx)
				if err == nil {
					select {
					case notes <- struct{}{}:
					default:
					}
				}
			}
			conn.Hijack().Close(context.Background()) //nolint:errcheck // a listening connection is not returned to the pool
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
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

// levelHandler drops records below a level (franz-go logs its routine at info).
type levelHandler struct {
	slog.Handler
	min slog.Level
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(as), h.min}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(name), h.min}
}

// kafkaRefused reports whether Kafka refused the client for who it is (authentication,
// authorization), which waiting cannot fix.
func kafkaRefused(err error) bool {
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) ||
		errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.IllegalSaslState) || errors.Is(err, kerr.UnsupportedSaslMechanism)
}
