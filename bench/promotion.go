package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// swapPhase is one swap of the live version measured under readers, or the idle phase (Kind
// idleKind: the same window without a swap; its swap fields are zero, and its DuringSwap figures
// are the queries in flight at the window's middle).
type swapPhase struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"` // promote | rollback | none (idleKind)
	From       string `json:"from"`
	To         string `json:"to"`
	LongReader bool   `json:"long_reader"`
	// Attempts and SwapMS are the SwapReport's: attempts including those that hit lock_timeout,
	// and the duration of the successful swap transaction.
	Attempts int     `json:"attempts"`
	SwapMS   float64 `json:"swap_ms"`
	// Routed: the views read both versions already (store/route.go); the swap only updated the
	// catalog.
	Routed bool `json:"routed"`
	// CallMS is the wall time of the Manager call (lag check, retries and backoff included).
	CallMS float64 `json:"call_ms"`
	// Reader latency over the phase: 1s before the call, the call, 1s after.
	ReaderQueries int     `json:"reader_queries"`
	ReaderErrors  int     `json:"reader_errors"`
	ReaderP50MS   float64 `json:"reader_p50_ms"`
	ReaderP99MS   float64 `json:"reader_p99_ms"`
	ReaderMaxMS   float64 `json:"reader_max_ms"`
	// ReaderMaxAtMS is when the slowest query started, relative to the Manager call's start.
	ReaderMaxAtMS float64 `json:"reader_max_at_ms"`
	// OverLockTimeout counts the queries slower than postgres.lock_timeout.
	OverLockTimeout int `json:"reader_queries_over_lock_timeout"`
	// Queries that overlapped the Manager call, and the slowest of them.
	DuringSwapQueries int     `json:"during_swap_queries"`
	DuringSwapMaxMS   float64 `json:"during_swap_max_ms"`
	// The long reader (phase b): how long its transaction was open, and its error if any.
	LongReaderHeldMS float64 `json:"long_reader_held_ms,omitempty"`
	LongReaderError  string  `json:"long_reader_error,omitempty"`
}

// promotionResult is the promotion scenario.
type promotionResult struct {
	Events        int         `json:"events"`
	Readers       int         `json:"readers"`
	LockTimeoutMS float64     `json:"lock_timeout_ms"`
	Phases        []swapPhase `json:"phases"`
	Exact         *bool       `json:"exact"`
	Detail        string      `json:"detail,omitempty"`
	Error         string      `json:"error,omitempty"`
	Skipped       bool        `json:"skipped,omitempty"`
	FirstErrors   []string    `json:"reader_first_errors,omitempty"`
}

// runPromotion runs a processor in this process on a small projection (promo events on their
// own topic: a swap's cost does not depend on the size of the tables) and measures, with
// promoReaders readers querying the live view in a tight loop:
//
//	idle                    no swap: the same 2s window of the readers alone, so that what the
//	                        machine does to them (two CPUs, eight readers in tight loops, the
//	                        processor and kfake) can be told from what a swap does
//	a_promote               promote balances_v2 over balances_v1
//	a_rollback              roll back to balances_v1
//	b_promote_long_reader   promote balances_v3 while a reader transaction (BEGIN; SELECT from
//	                        the view; 2s; COMMIT) is open. The versions have the same shape, so
//	                        the views are routed over them since create (store/route.go): the
//	                        swap only updates the catalog, and no reader waits for it.
func runPromotion(ctx context.Context, o options, c *cluster) *promotionResult {
	res := &promotionResult{Events: o.promoEvents, Readers: promoReaders}
	if err := promotion(ctx, o, c, res); err != nil {
		res.Error = err.Error()
	}
	return res
}

func promotion(ctx context.Context, o options, c *cluster, res *promotionResult) error {
	bank := newBank(promoTopic, o.seed+1000)
	if err := c.produce(ctx, bank, o.promoEvents); err != nil {
		return err
	}
	want := bank.Balances()
	db, err := createDatabase(ctx, o.dbURL, o.keep)
	if err != nil {
		return err
	}
	defer db.drop()
	cfg, err := parseConfig(projectionYAML(c.addrs, db.url, promoTopic, "balances", "balances", "global"))
	if err != nil {
		return err
	}
	res.LockTimeoutMS = float64(cfg.Postgres.LockTimeout.Microseconds()) / 1000
	p, stop, err := startProcessor(ctx, cfg, o, "promotion")
	if err != nil {
		return err
	}
	defer stop()
	mgr := p.Manager()
	if err := waitVersion(ctx, p, "balances_v1", func(v *store.Version) bool { return v.CaughtUpAt != nil }); err != nil {
		return err
	}

	rd, err := startReaders(ctx, db.url, promoReaders)
	if err != nil {
		return err
	}
	defer rd.stop()

	newVersion := func(key string) error {
		if _, err := mgr.Create(ctx, lifecycle.CreateRequest{Key: key, Projection: "balances", Start: true}); err != nil {
			return err
		}
		return waitVersion(ctx, p, key, func(v *store.Version) bool { return v.State == store.StateTailing })
	}
	measure := func(name string, long bool, call func() (*control.SwapReport, error)) error {
		ph := swapPhase{Name: name, LongReader: long}
		from := time.Now()
		sleep(ctx, time.Second)
		var lr *longReader
		if long {
			if lr, err = startLongReader(ctx, db.url, 2*time.Second); err != nil {
				return err
			}
			sleep(ctx, 100*time.Millisecond)
		}
		t0 := time.Now()
		rep, err := &control.SwapReport{Kind: idleKind}, error(nil)
		if call != nil {
			rep, err = call()
		}
		t1 := time.Now()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if lr != nil {
			held, lerr := lr.wait()
			ph.LongReaderHeldMS = ms(held)
			if lerr != nil {
				ph.LongReaderError = lerr.Error()
			}
		}
		sleep(ctx, time.Second)
		ph.Kind, ph.From, ph.To, ph.Attempts, ph.SwapMS, ph.Routed = rep.Kind, rep.From, rep.To, rep.Attempts, rep.SwapDurationMS, rep.Routed
		ph.CallMS = ms(t1.Sub(t0))
		rd.stats(&ph, from, time.Now(), t0, t1, cfg.Postgres.LockTimeout)
		res.Phases = append(res.Phases, ph)
		if call == nil {
			progress("  %s: no swap, readers max %.1fms over the window", name, ph.ReaderMaxMS)
		} else {
			progress("  %s: %s -> %s, %d attempt(s), swap %.1fms (routed: %v), call %.0fms, readers max %.1fms during the swap",
				name, ph.From, ph.To, ph.Attempts, ph.SwapMS, ph.Routed, ph.CallMS, ph.DuringSwapMaxMS)
		}
		return nil
	}

	if err := newVersion("balances_v2"); err != nil {
		return err
	}
	if err := measure("idle", false, nil); err != nil {
		return err
	}
	promote := func(key string) func() (*control.SwapReport, error) {
		return func() (*control.SwapReport, error) {
			return mgr.Promote(ctx, key, control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
		}
	}
	if err := measure("a_promote", false, promote("balances_v2")); err != nil {
		return err
	}
	if err := measure("a_rollback", false, func() (*control.SwapReport, error) { return mgr.Rollback(ctx, "balances") }); err != nil {
		return err
	}
	if err := newVersion("balances_v3"); err != nil {
		return err
	}
	if err := measure("b_promote_long_reader", true, promote("balances_v3")); err != nil {
		return err
	}
	rd.stop()
	res.FirstErrors = rd.firstErrors()

	exact, detail, err := compareBalances(ctx, p.Store().Pool(), "public.balances", want)
	if err != nil {
		return err
	}
	res.Exact, res.Detail = &exact, detail
	return nil
}

// idleKind is the kind of the phase without a swap.
const idleKind = "none"

// waitVersion polls a version until cond holds (2 minutes at most), failing early if it failed.
func waitVersion(ctx context.Context, p *processor.Processor, key string, cond func(*store.Version) bool) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		v, err := p.Store().Version(ctx, key)
		if err == nil {
			if cond(v) {
				return nil
			}
			if v.State == store.StateFailed {
				return fmt.Errorf("%s failed: %v", key, v.Error) //nolint:errorlint // v.Error is the outcome message, not an error value
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: condition not reached within 2 minutes (last error: %w)", key, err)
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// sleep waits d or until ctx ends; it reports whether it slept the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// readerSample is one reader query.
type readerSample struct {
	start time.Time
	dur   time.Duration
	err   bool
}

// readers query the live view in a tight loop, each on a connection of its own, and keep every
// query's start and duration.
type readers struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples [][]readerSample
	errs    []string
	once    sync.Once
}

func startReaders(ctx context.Context, dbURL string, n int) (*readers, error) {
	rctx, cancel := context.WithCancel(ctx)
	r := &readers{cancel: cancel, samples: make([][]readerSample, n)}
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			cancel()
			for _, c := range conns[:i] {
				_ = c.Close(ctx)
			}
			return nil, err
		}
		conns[i] = conn
	}
	for i, conn := range conns {
		r.wg.Go(func() {
			defer conn.Close(context.Background())
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			var local []readerSample
			for rctx.Err() == nil {
				acct := fmt.Sprintf("acct-%05d", rnd.IntN(bankAccounts))
				var total int64
				t := time.Now()
				err := conn.QueryRow(rctx, "SELECT total FROM public.balances WHERE account_id = $1", acct).Scan(&total)
				d := time.Since(t)
				if rctx.Err() != nil {
					break
				}
				failed := err != nil && !errors.Is(err, pgx.ErrNoRows)
				local = append(local, readerSample{start: t, dur: d, err: failed})
				if failed {
					r.mu.Lock()
					if len(r.errs) < 5 {
						r.errs = append(r.errs, err.Error())
					}
					r.mu.Unlock()
				}
				if len(local) >= 1024 {
					r.flush(i, local)
					local = local[:0]
				}
			}
			r.flush(i, local)
		})
	}
	return r, nil
}

func (r *readers) flush(i int, s []readerSample) {
	r.mu.Lock()
	r.samples[i] = append(r.samples[i], s...)
	r.mu.Unlock()
}

func (r *readers) stop() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
}

func (r *readers) firstErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// stats fills the reader figures of a phase: queries started in [from, to), and those
// overlapping the Manager call [c0, c1]. Readers flush their samples every 1024 queries, so it
// first waits (2s at most) until each reader has flushed a query started at or after to.
func (r *readers) stats(ph *swapPhase, from, to, c0, c1 time.Time, lockTimeout time.Duration) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		all := true
		for _, s := range r.samples {
			all = all && len(s) > 0 && !s[len(s)-1].start.Before(to)
		}
		r.mu.Unlock()
		if all {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var durs []time.Duration
	for _, ss := range r.samples {
		for _, s := range ss {
			if s.start.Before(from) || !s.start.Before(to) {
				continue
			}
			durs = append(durs, s.dur)
			if s.dur > lockTimeout {
				ph.OverLockTimeout++
			}
			if ms(s.dur) > ph.ReaderMaxMS {
				ph.ReaderMaxMS, ph.ReaderMaxAtMS = ms(s.dur), ms(s.start.Sub(c0))
			}
			if s.err {
				ph.ReaderErrors++
			}
			if s.start.Before(c1) && s.start.Add(s.dur).After(c0) {
				ph.DuringSwapQueries++
				ph.DuringSwapMaxMS = max(ph.DuringSwapMaxMS, ms(s.dur))
			}
		}
	}
	slices.Sort(durs)
	ph.ReaderQueries = len(durs)
	if len(durs) > 0 {
		ph.ReaderP50MS = ms(durs[len(durs)*50/100])
		ph.ReaderP99MS = ms(durs[min(len(durs)-1, len(durs)*99/100)])
	}
}

// longReader is a reader transaction held open: BEGIN; SELECT from the view; hold; COMMIT.
type longReader struct {
	done chan struct{}
	held time.Duration
	err  error
}

// startLongReader returns once the transaction has read the view (so it holds its lock).
func startLongReader(ctx context.Context, dbURL string, hold time.Duration) (*longReader, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	start := time.Now()
	var n int64
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM public.balances").Scan(&n); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	lr := &longReader{done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		defer conn.Close(context.Background())
		sleep(ctx, hold-time.Since(start))
		lr.err = tx.Commit(ctx)
		lr.held = time.Since(start)
	}()
	return lr, nil
}

func (lr *longReader) wait() (time.Duration, error) {
	<-lr.done
	return lr.held, lr.err
}

func ms(d time.Duration) float64 { return round2(float64(d.Microseconds()) / 1000) }

// startProcessor runs a processor in this process until stop, once it has started.
func startProcessor(ctx context.Context, cfg *topology.Config, o options, scenario string) (*processor.Processor, func(), error) {
	p := processor.New(cfg, processor.Options{Logger: logger(o.verbose), ShutdownTimeout: 10 * time.Second})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			progress("  %s: processor: %v", scenario, err)
		}
	}
	select {
	case <-p.Started():
		return p, stop, nil
	case err := <-done:
		cancel()
		return nil, nil, fmt.Errorf("processor: %w", err)
	case <-time.After(60 * time.Second):
		stop()
		return nil, nil, errors.New("processor did not start within 60s")
	}
}
