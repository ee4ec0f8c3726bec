package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/topology"
)

// runChild is the bench re-executed as `-child serve -config FILE`: the real processor, as
// `kreplay serve` runs it, until SIGTERM; with `-child serve-code` (codeChildMode) the config
// file has no projections and the processor runs the Go projector. With cpuprofile it profiles
// the whole run.
func runChild(mode, configPath, cpuprofile string, verbose bool) int {
	opts := processor.Options{Logger: logger(verbose)}
	var cfg *topology.Config
	var err error
	switch mode {
	case "serve":
		cfg, err = topology.Load(configPath, func(string) string { return "" })
	case codeChildMode: // the Go projector: the file has no projections
		cfg, err = topology.ReadFile(configPath, func(string) string { return "" })
		opts.Projectors = []*projector.Projector{codeProjector()}
	default:
		fmt.Fprintf(os.Stderr, "bench child: unknown mode %q\n", mode)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench child: %v\n", err)
		return 2
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench child: %v\n", err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench child: cpu profile: %v\n", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := processor.New(cfg, opts).Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: %v\n", err)
		return 1
	}
	return 0
}

// replayRun is one kreplay replay measured in a child process.
type replayRun struct {
	name      string // the projection, also its table
	ordering  topology.Ordering
	profile   string // CPU profile file for the child, "" for none
	foldBatch int    // > 0: the set-based fold with this batch size instead of per-event handlers
}

// runReplay replays the whole workload with a fresh kreplay: a new database and a projection
// that serve bootstraps as <name>_v1, live at once, replayed from offset zero. It is timed from
// the child's start until the version has caught up with the high watermarks it started with
// (caught_up_at set and every checkpoint at the end of its partition).
func runReplay(ctx context.Context, o options, c *cluster, want map[string]int64, rr replayRun) *scenario {
	name := "kreplay_" + string(rr.ordering)
	if rr.foldBatch > 0 {
		name = "kreplay_fold"
	}
	sc := &scenario{Name: name, Events: o.events, Extra: map[string]any{}}
	elapsed, exact, detail, note, err := replayOnce(ctx, o, c, want, rr, sc)
	return sc.finish(elapsed, exact, detail, err, note)
}

func replayOnce(ctx context.Context, o options, c *cluster, want map[string]int64, rr replayRun, sc *scenario) (elapsed time.Duration, exact bool, detail, note string, err error) {
	db, err := createDatabase(ctx, o.dbURL, o.keep)
	if err != nil {
		return 0, false, "", "", err
	}
	defer db.drop()
	yaml := projectionYAML(c.addrs, db.url, bankTopic, rr.name, rr.name, string(rr.ordering))
	if rr.foldBatch > 0 {
		yaml = foldYAML(c.addrs, db.url, bankTopic, rr.name, rr.name, rr.foldBatch)
	}
	cfg, err := parseConfig(yaml)
	if err != nil {
		return 0, false, "", "", fmt.Errorf("config: %w", err)
	}
	pc := cfg.Projections[0]
	note = fmt.Sprintf("child process; batch_size %d", pc.BatchSize)
	if rr.foldBatch > 0 {
		note += "; set-based fold (sum, last per account), ordering global"
	}
	if rr.ordering == topology.OrderingPartition {
		note += fmt.Sprintf(", workers %d (default)", pc.Workers)
	}
	sc.Extra["batch_size"] = pc.BatchSize
	sc.Extra["workers"] = pc.Workers
	dir, err := os.MkdirTemp("", "kreplay-bench-")
	if err != nil {
		return 0, false, "", "", err
	}
	defer func() { _ = os.RemoveAll(dir) }() // a scratch directory in TMPDIR
	cfgPath := filepath.Join(dir, "kreplay.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		return 0, false, "", "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, false, "", "", err
	}
	args := []string{"-child", "serve", "-config", cfgPath}
	if rr.profile != "" {
		abs, err := filepath.Abs(rr.profile)
		if err != nil {
			return 0, false, "", "", err
		}
		args = append(args, "-cpuprofile", abs)
		note += ", CPU profile " + rr.profile
	}
	if o.verbose {
		args = append(args, "-v")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the bench

	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		return 0, false, "", "", err
	}
	defer pool.Close()

	key := rr.name + "_v1"
	win := startCPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, false, "", "", fmt.Errorf("start the child: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	rss := newRSSSampler(cmd.Process.Pid)
	defer rss.stop()
	reaped := false
	defer func() {
		if !reaped {
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck // killed: its exit status says so
		}
	}()

	// Wait until the version has caught up: kreplay.advance notifies kreplay_catalog in the
	// transaction that sets caught_up_at, and a listener confirms it with one query per
	// notification. A query is a snapshot, and while a snapshot is open PostgreSQL cannot prune
	// the row versions the replay replaces (HOT updates then find no room, and the projection
	// table and kreplay.checkpoints grow): the ceilings have no such reader, so the bench reads
	// the catalog only twice a second for its progress and trend samples.
	caughtAt := make(chan time.Time, 1)
	caughtUp := func() (bool, error) {
		var ok bool
		err := pool.QueryRow(ctx, `SELECT v.caught_up_at IS NOT NULL AND coalesce((SELECT sum(next_offset - start_offset) FROM kreplay.checkpoints WHERE version = v.key), 0) = $2
			FROM kreplay.versions v WHERE v.key = $1`, key, o.events).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) {
			err = nil
		}
		return ok, err
	}
	lconn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return 0, false, "", note, err
	}
	defer lconn.Close(context.WithoutCancel(ctx))
	if _, err := lconn.Exec(ctx, "LISTEN kreplay_catalog"); err != nil {
		return 0, false, "", note, err
	}
	lctx, cancelListening := context.WithCancel(ctx)
	listened := make(chan struct{})
	stopListening := func() { cancelListening(); <-listened }
	defer stopListening()
	go func() {
		defer close(listened)
		for {
			if _, err := lconn.WaitForNotification(lctx); err != nil {
				return
			}
			at := time.Now()
			if ok, err := caughtUp(); err == nil && ok {
				caughtAt <- at
				return
			}
		}
	}()
	deadline := time.NewTimer(o.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	var applied int64
	// The cost per event over the replay (see trendSummary): events applied, and the CPU time of
	// the child and of the database's backends (this poll's own excepted), twice a second.
	pgCPU := newCPUTracker()
	var points []trendPoint
	var end time.Time
	for end.IsZero() {
		var caught *time.Time
		var next int64
		var state string
		var pids []int
		qerr := pool.QueryRow(ctx, `SELECT v.state, v.caught_up_at,
			coalesce((SELECT sum(next_offset - start_offset) FROM kreplay.checkpoints WHERE version = v.key), 0)::bigint,
			(SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query <> 'LISTEN kreplay_catalog')
			FROM kreplay.versions v WHERE v.key = $1`, key).Scan(&state, &caught, &next, &pids)
		if qerr == nil {
			applied = next
			now := time.Now()
			points = append(points, trendPoint{events: next, wall: now.Sub(start).Seconds(),
				child: procCPU(cmd.Process.Pid).Seconds(), pgCPU: pgCPU.sample(pids)})
			if state == "failed" {
				return 0, false, "", note, fmt.Errorf("%s failed during the replay (see the child's log above)", key)
			}
			if caught != nil && next == int64(o.events) {
				// Caught up since the last sample: the notification says when (if it is late, now).
				select {
				case end = <-caughtAt:
				case <-time.After(200 * time.Millisecond):
					end = now
				}
				continue
			}
		}
		if time.Since(lastLog) > 10*time.Second {
			el := time.Since(start).Seconds()
			progress("  %s: %d/%d events applied after %.0fs (%.0f/s), child RSS %.0f MiB", sc.Name, applied, o.events, el, float64(applied)/el, mib(rss.current()))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, false, "", note, ctx.Err()
		case err := <-exited:
			reaped = true
			return 0, false, "", note, fmt.Errorf("the child exited before catching up: %w", err)
		case <-deadline.C:
			return 0, false, "", note, fmt.Errorf("not caught up after %s (%d of %d events applied)", o.timeout, applied, o.events)
		case end = <-caughtAt:
			// The last sample, at the end.
			var pids []int
			_ = pool.QueryRow(ctx, `SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query <> 'LISTEN kreplay_catalog'`).Scan(&pids)
			points = append(points, trendPoint{events: int64(o.events), wall: end.Sub(start).Seconds(),
				child: procCPU(cmd.Process.Pid).Seconds(), pgCPU: pgCPU.sample(pids)})
		case <-tick.C:
		}
	}
	stopListening() // before pool changes below: the listener queries it
	elapsed = end.Sub(start)
	// From the first point with events applied: the child's start-up is not an event's cost.
	for i, p := range points {
		if p.events > 0 {
			sc.Trend = summarizeTrend(points[max(i-1, 0):])
			break
		}
	}
	var backends []int
	if rows, err := pool.Query(ctx, "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"); err == nil {
		// Where the PostgreSQL CPU went: the appliers' backends (kreplay:<key>...) or the others
		// (the child's catalog connections, this poll). The database is new: a backend's whole
		// CPU time is the scenario's.
		byApp := map[string]float64{}
		var pid int
		var app string
		_, _ = pgx.ForEachRow(rows, []any{&pid, &app}, func() error {
			backends = append(backends, pid)
			who := "other"
			if strings.HasPrefix(app, "kreplay:"+key) {
				who = "appliers"
			}
			byApp[who] = round2(byApp[who] + procCPU(pid).Seconds())
			return nil
		})
		sc.Extra["pg_cpu_seconds_by_backend"] = byApp
	}
	use, ticks := win.end(cmd.Process.Pid, backends)
	use.finish(ticks)
	sc.CPU = &use
	peak := rss.stop()
	sc.PeakRSSMiB = mib(peak.hwm)
	sc.Extra["child_peak_rss_sampled_mib"] = mib(peak.maxRSS)
	sc.Extra["child_rss_p90_mib"] = mib(peak.p90)

	// Stop the child gracefully (it writes its CPU profile on the way out).
	_ = cmd.Process.Signal(syscall.SIGTERM)
	termAt := time.Now()
	select {
	case err := <-exited:
		reaped = true
		sc.Extra["child_shutdown_seconds"] = round2(time.Since(termAt).Seconds())
		if err != nil {
			progress("  %s: the child exited with %v after SIGTERM", sc.Name, err)
			sc.Extra["child_exit"] = err.Error()
		}
	case <-time.After(60 * time.Second):
		progress("  %s: the child did not stop within 60s of SIGTERM; killing it", sc.Name)
		sc.Extra["child_exit"] = "killed after 60s"
	}

	// The catalog's view of the replay: from the version's creation to caught_up_at.
	var created, started, caught time.Time
	var startedOK *time.Time
	if err := pool.QueryRow(ctx, `SELECT created_at, started_at, caught_up_at FROM kreplay.versions WHERE key = $1`, key).
		Scan(&created, &startedOK, &caught); err == nil {
		started = created
		if startedOK != nil {
			started = *startedOK
		}
		sc.Extra["setup_seconds"] = round2(created.Sub(start).Seconds())
		sc.Extra["catalog_replay_seconds"] = round2(caught.Sub(started).Seconds())
	}
	table := pgx.Identifier{key, rr.name}.Sanitize()
	pool.Close() // its backend too must report its statistics
	if c, err := readPGCounters(ctx, db.url, table, o.events); err == nil {
		sc.PG = c
	} else {
		progress("  %s: PostgreSQL's counters: %v", sc.Name, err)
	}
	if pool, err = pgxpool.New(ctx, db.url); err != nil {
		return 0, false, "", note, err
	}
	defer pool.Close()
	exact, detail, err = compareBalances(ctx, pool, table, want)
	if err == nil && exact {
		// The live view too: readers see the replayed version.
		var ok bool
		ok, _, err = compareBalances(ctx, pool, pgx.Identifier{"public", rr.name}.Sanitize(), want)
		if err == nil && !ok {
			exact, detail = false, "the live view public."+rr.name+" differs from "+key
		}
	}
	return elapsed, exact, detail, note, err
}

// rssPeak is a process's memory high-water marks, in KiB.
type rssPeak struct {
	hwm    int64 // VmHWM, the kernel's peak resident set
	maxRSS int64 // the largest VmRSS sampled
	p90    int64 // the 90th percentile of the VmRSS samples: the level the process works at, which a
	// momentary peak (a collection that came late) does not move as much
}

// rssSampler samples /proc/<pid>/status every 100ms while a process runs.
type rssSampler struct {
	pid     int
	mu      sync.Mutex
	peak    rssPeak
	samples []int64
	cur     int64
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func newRSSSampler(pid int) *rssSampler {
	s := &rssSampler{pid: pid, done: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	})
	return s
}

func (s *rssSampler) sample() {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.pid) + "/status")
	if err != nil {
		return
	}
	hwm, rss := procKiB(string(b), "VmHWM:"), procKiB(string(b), "VmRSS:")
	s.mu.Lock()
	s.peak.hwm = max(s.peak.hwm, hwm)
	s.peak.maxRSS = max(s.peak.maxRSS, rss)
	if rss > 0 {
		s.samples = append(s.samples, rss)
	}
	s.cur = rss
	s.mu.Unlock()
}

func (s *rssSampler) current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// stop takes a last sample and returns the peaks; it may be called again.
func (s *rssSampler) stop() rssPeak {
	s.once.Do(func() {
		close(s.done)
		s.wg.Wait()
		s.sample()
		s.mu.Lock()
		if n := len(s.samples); n > 0 {
			slices.Sort(s.samples)
			s.peak.p90 = s.samples[min(n-1, n*9/10)]
		}
		s.mu.Unlock()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// procKiB reads a "Name:   123 kB" line of a /proc file.
func procKiB(status, field string) int64 {
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// selfPeakKiB is this process's VmHWM.
func selfPeakKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return procKiB(string(b), "VmHWM:")
}

func mib(kib int64) float64 { return round2(float64(kib) / 1024) }
