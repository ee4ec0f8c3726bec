package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"golang.org/x/sync/errgroup"

	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/internal/startstop"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/embedded"
	"github.com/kreplay/kreplay/processor/httpapi"
	"github.com/kreplay/kreplay/processor/leader"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/processor/projector"
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
	// TakeOver takes the control and status topics from another catalog that holds them
	// (serve --take-over), instead of refusing to start: for an installation whose predecessor
	// on these topics is gone for good.
	TakeOver bool
	// Projectors are projections whose handlers are Go code (package projector), one per
	// projection name: New adds them to the config, and bootstrap and create snapshot their
	// definitions. Defaults to none.
	Projectors []*projector.Projector
	// PreviousProjectors are older versions of Projectors (same Name, another Version) that
	// this binary keeps only to run the versions created with them, such as the live version
	// while its successor replays. A version whose code is in neither list does not run on
	// this instance, and says why. Defaults to none.
	PreviousProjectors []*projector.Projector
	// Reactors run for the events each projection's live version commits, never for a replay
	// (see package projector). Defaults to none.
	Reactors []*projector.Reactor
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
	takeOver        bool
	instance        string
	abrupt          atomic.Bool // Kill: stop without finishing batches or committing offsets
	started         chan struct{}
	code            codeRegistry                    // the projectors of this binary (code.go)
	reactors        map[string][]*projector.Reactor // by projection
	feeds           map[string]*reactionFeed        // by projection, once Run started them
	reactionMetrics *reactionMetrics
	optionsErr      error // what New found wrong in Options: Run returns it

	// Set up by Run before started is closed.
	store    *store.Store
	kopts    []kgo.Opt
	adminCl  *kgo.Client
	admin    *kadm.Client
	producer *kgo.Client
	broker   *embedded.Broker
	mgr      *lifecycle.Manager
	leader   *leader.Leader
	work     *startstop.Group // runners, runners being stopped, auto-promotions: Run stops it last
	retries  *retry.Logger

	mu       sync.Mutex
	runners  map[string]*runner
	httpAddr string
}

// New returns a processor for the config (already loaded and validated). It connects nothing
// until Run. With Projectors, it runs on a copy of the config to which they are added, which it
// validates (a config file without projections can be read with topology.ReadFile); Run returns
// what is wrong with them.
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
	full, code, optsErr := withProjectors(cfg, opts)
	if optsErr != nil {
		full = cfg
	}
	reactors := map[string][]*projector.Reactor{}
	for _, r := range opts.Reactors {
		reactors[r.Projection] = append(reactors[r.Projection], r)
	}
	return &Processor{
		cfg: full, log: opts.Logger, reg: opts.Registry, metrics: m,
		code: code, reactors: reactors, optionsErr: optsErr, feeds: map[string]*reactionFeed{},
		health:          &health{m: m},
		shutdownTimeout: opts.ShutdownTimeout,
		takeOver:        opts.TakeOver,
		instance:        instanceName(),
		started:         make(chan struct{}),
		retries:         retry.NewLogger(opts.Logger, slog.LevelWarn),
		runners:         map[string]*runner{},
	}
}

// Started is closed once Run has validated the config against PostgreSQL, bootstrapped the
// projections and started consuming.
func (p *Processor) Started() <-chan struct{} { return p.started }

// Manager is the replay lifecycle of a started processor.
func (p *Processor) Manager() *lifecycle.Manager { return p.mgr }

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
func (p *Processor) Leading() bool { return p.leader != nil && p.leader.Leading() }

// Handler is kreplay's HTTP API (see package httpapi).
func (p *Processor) Handler() http.Handler { return httpapi.Handler(p) }

// HTTPAddr is the address the HTTP server listens on (after Started), "" when disabled.
func (p *Processor) HTTPAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.httpAddr
}

// Registry is where the processor's metrics are (httpapi.Source).
func (p *Processor) Registry() *prometheus.Registry { return p.reg }

// Ready reports whether PostgreSQL and Kafka answer (httpapi.Source).
func (p *Processor) Ready() (bool, string) { return p.health.ready() }

// Statuses are the statuses the status loop computed last (httpapi.Source).
func (p *Processor) Statuses() []control.Status {
	if p.leader == nil {
		return nil
	}
	return p.leader.Statuses()
}

// Run runs the processor until ctx ends, then shuts down gracefully: batches in flight finish,
// offsets are committed, consumers leave their groups. It returns nil after a clean shutdown.
func (p *Processor) Run(ctx context.Context) error {
	// What the config says that can be checked without the network is checked first, so that
	// a config error is what serve reports, whatever holds its ports.
	if err := p.check(); err != nil {
		return err
	}
	// HTTP next: /healthz answers (and /readyz says why not ready) while setup waits for
	// PostgreSQL and Kafka, so that an orchestrator does not kill a process that is waiting.
	// The server stops last.
	web := startstop.New(context.WithoutCancel(ctx))
	defer web.Stop()
	if listen := p.cfg.HTTP.Listen; listen != "off" && listen != "" {
		srv, err := httpapi.Listen(ctx, listen, p.Handler())
		if err != nil {
			return fmt.Errorf("http.listen %s: %w", listen, err)
		}
		p.mu.Lock()
		p.httpAddr = srv.Addr()
		p.mu.Unlock()
		p.log.Info("http listening", "addr", srv.Addr())
		web.Go(func(ctx context.Context) {
			if err := srv.Run(ctx); err != nil {
				p.log.Error("http server stopped", "listen", listen, "err", err)
			}
		})
	}

	// Runners stop after the loops that start them, and gracefully: not with ctx.
	p.work = startstop.New(context.WithoutCancel(ctx))
	defer p.work.Stop()
	if err := p.setup(ctx); err != nil {
		p.close()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer p.close()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.reconcileLoop(gctx) })
	g.Go(func() error { return p.probeLoop(gctx) })
	g.Go(func() error { return p.leader.Run(gctx) })
	for _, f := range p.feeds {
		g.Go(func() error { f.run(gctx); return nil })
	}
	close(p.started)
	p.log.Info("kreplay serving", "brokers", p.cfg.Kafka.Brokers, "http", p.HTTPAddr())
	err := g.Wait()
	p.stopAllRunners()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	p.log.Info("kreplay stopped")
	return nil
}

// check checks what the config says that needs no network: the Kafka client settings (TLS
// files, SASL mechanism) and the embedded broker's address.
func (p *Processor) check() error {
	if p.optionsErr != nil {
		return p.optionsErr
	}
	k := p.cfg.Kafka
	if p.embeddedBroker() {
		if _, _, err := embedded.HostPort(k.EmbeddedListen); err != nil {
			return err
		}
	}
	_, err := kafkaconn.Opts(k, k.Brokers, k.ClientID, nil)
	return err
}

func (p *Processor) embeddedBroker() bool {
	return len(p.cfg.Kafka.Brokers) == 1 && p.cfg.Kafka.Brokers[0] == "embedded"
}

func (p *Processor) setup(ctx context.Context) error {
	cfg := p.cfg
	if p.embeddedBroker() {
		b, err := embedded.Start(cfg, p.log)
		if err != nil {
			return err
		}
		p.broker = b
		cfg.Kafka.Brokers = b.Addrs
		p.log.Info("embedded Kafka broker started (in memory: its data is lost at exit)", "addr", b.Addrs[0])
	}
	kopts, err := kafkaconn.Opts(cfg.Kafka, cfg.Kafka.Brokers, cfg.Kafka.ClientID, kafkaconn.Quiet(p.log, slog.LevelWarn, time.Minute))
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
	// Versions created before roles get theirs; leftovers of crashes are dropped. Not under
	// waitFor's timeout: it may wait for another instance creating a version.
	if err := p.store.EnsureRoles(ctx); err != nil {
		return fmt.Errorf("postgres: the versions' roles: %w", err)
	}
	p.health.postgres(true, nil)
	p.log.Info("postgres ready: catalog up to date")
	if err := p.waitFor(ctx, "kafka", p.ensureTopics, func(err error) bool { return !kafkaconn.Refused(err) }); err != nil {
		if kafkaconn.Refused(err) {
			return fmt.Errorf("kafka refused kreplay's credentials or permissions (check kafka.sasl, kafka.tls and the ACLs): %w", err)
		}
		return fmt.Errorf("kafka: %w", err)
	}
	p.health.kafka(true, nil)
	p.log.Info("kafka ready: control, status and dead-letter topics exist")
	p.mgr = lifecycle.New(lifecycle.Config{Config: cfg, Store: p.store, Kafka: p.adminCl, Log: p.log, Registry: p.reg})
	p.leader = leader.New(leader.Config{
		ControlTopic: cfg.Kafka.ControlTopic, StatusTopic: cfg.Kafka.StatusTopic, Secret: cfg.Control.Secret,
		Instance: p.instance, StatusInterval: cfg.Control.StatusInterval,
		Installation: cfg.Installation, TakeOver: p.takeOver,
		ClientOpts:       func() []kgo.Opt { return p.kafkaOpts(cfg.Kafka.ClientID + "-control") },
		StatusClientOpts: func() []kgo.Opt { return p.kafkaOpts(cfg.Kafka.ClientID + "-installation") },
	}, p.store, p.producer, p.mgr, p.log, p.reg)
	// Before anything is consumed: the consumer groups are named after the installation, and
	// another catalog on these topics would split their partitions with this one.
	if err := p.checkInstallation(ctx); err != nil {
		return err
	}

	// What PostgreSQL refuses about the config stops serve; a passing failure (a connection
	// terminated, the server restarting, a broker not answering) is waited out.
	if err := p.waitFor(ctx, "postgres", p.validate, store.IsTransient); err != nil {
		return err
	}
	for _, pc := range cfg.Projections {
		if err := p.waitFor(ctx, "projection "+pc.Name+" to start", func(ctx context.Context) error { return p.mgr.Bootstrap(ctx, pc.Name) }, transientAtStart); err != nil {
			return err
		}
	}
	// Reactors start where the live version is now (at its start watermarks while it replays its
	// history), before this instance consumes anything: every event it commits from now on is
	// reacted to.
	for name, rs := range p.reactors {
		if err := p.waitFor(ctx, "the reactions of "+name+" to start", func(ctx context.Context) error {
			started, err := p.store.StartReactions(ctx, name)
			if started {
				p.log.Info("reactions started: the reactors react to every event the live version commits from now on", "projection", name)
			}
			return err
		}, store.IsTransient); err != nil {
			return err
		}
		p.feeds[name] = p.newReactionFeed(name, rs)
	}
	return nil
}

// validate checks every projection of the config against PostgreSQL; it returns a transient
// error as is (to be retried), and every refusal joined.
func (p *Processor) validate(ctx context.Context) error {
	var errs []error
	for _, pc := range p.cfg.Projections {
		def, err := p.cfg.Definition(pc.Name)
		if err == nil {
			err = p.store.ValidateDefinition(ctx, def)
		}
		if store.IsTransient(err) {
			return err
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("config refused by PostgreSQL (no version was started):\n%w", err)
	}
	return nil
}

// transientAtStart says whether a failure to start a projection may pass: PostgreSQL's
// connection or server, or Kafka not answering. Anything else (a refusal of the request or of
// the config, a view another projection owns) stops serve with its reason.
func transientAtStart(err error) bool {
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, control.ErrInvalid):
		return false
	case store.IsTransient(err):
		return true
	case errors.As(err, &pgErr):
		return false
	}
	return kafkaconn.Unreachable(err)
}

// checkInstallation makes sure this catalog holds the control and status topics (see
// leader.CheckInstallation), retrying while PostgreSQL or Kafka fail; a clash ends it at once.
func (p *Processor) checkInstallation(ctx context.Context) error {
	var clash *leader.ClashError
	return retry.Policy{
		Retryable: func(err error) bool { return !errors.As(err, &clash) && !kafkaconn.Refused(err) },
		Log:       p.retries, What: "check the installation on the status topic", Max: 5 * time.Second,
	}.Do(ctx, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return p.leader.CheckInstallation(actx)
	})
}

// waitFor runs fn until it succeeds, logging while a dependency is unreachable; an error
// retryable rejects (a wrong password, say) ends the wait at once. An attempt that takes longer
// than 30s is abandoned and retried.
func (p *Processor) waitFor(ctx context.Context, what string, fn func(context.Context) error, retryable func(error) bool) error {
	timedOut := errors.New("no answer within 30s")
	return retry.Policy{Log: p.retries, What: "waiting for " + what, Max: 5 * time.Second, Retryable: func(err error) bool {
		return errors.Is(err, timedOut) || retryable(err)
	}}.Do(ctx, func(ctx context.Context) error {
		actx, cancel := context.WithTimeoutCause(ctx, 30*time.Second, timedOut)
		defer cancel()
		err := fn(actx)
		if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), timedOut) {
			return fmt.Errorf("%w: %w", timedOut, err)
		}
		return err
	})
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
	if p.broker != nil {
		p.broker.Close()
	}
}

// catalog is the retry policy of catalog writes that must not be lost: transient errors are
// retried until ctx ends.
func (p *Processor) catalog(what string) retry.Policy {
	return retry.Policy{Retryable: store.IsTransient, Log: p.retries, What: what}
}

// kafkaOpts are the options of one of this processor's clients, with kprom metrics of its own:
// a kprom.Metrics serves one client at a time (OnNewClient sets it up while the hooks of another
// client would read it), so each call makes one.
func (p *Processor) kafkaOpts(clientID string) []kgo.Opt {
	opts := append([]kgo.Opt(nil), p.kopts...)
	opts = append(opts, kgo.ClientID(clientID))
	if p.reg != nil {
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("kreplay_kafka", kprom.Registry(p.reg), kprom.WithClientLabel())))
	}
	return opts
}

// instanceName names this instance in outcomes and logs (host:pid).
func instanceName() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}
