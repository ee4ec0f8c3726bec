package main

// The kreplay_code scenario: the bank workload replayed by a Go projector (package
// processor/projector) with pipelined handlers, in a child process as kreplay_global, so that the
// two compare the Go handler path with the SQL one. The Go handlers decode each payload in Go and
// queue the upsert with the amount as a bigint; the SQL handlers pass the payload as jsonb and let
// PostgreSQL extract it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/topology"
)

// codeChildMode is the child mode that serves the Go projector (-child serve-code).
const codeChildMode = "serve-code"

// codeProjection is the projection (and table) the Go projector keeps.
const codeProjection = "balances_c"

// codeProjector is the bank projection of projectionYAML as Go code, with pipelined handlers.
func codeProjector() *projector.Projector {
	upsert := `INSERT INTO ` + codeProjection + ` AS b (account_id, total, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at`
	handler := func(sign int64) projector.Handler {
		return projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
			var d struct {
				Amount *int64 `json:"amount"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return err
			}
			if d.Amount == nil {
				return errors.New("no amount")
			}
			b.Queue(upsert, ev.AggregateID, sign**d.Amount, ev.CreatedAt)
			return nil
		})
	}
	return &projector.Projector{
		Name: codeProjection, Version: "1", Ordering: topology.OrderingGlobal, Sources: []string{bankTopic},
		Tables:   []string{"CREATE TABLE " + codeProjection + " (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL)"},
		Checks:   []string{"SELECT count(*) FROM " + codeProjection, "SELECT coalesce(sum(total), 0) FROM " + codeProjection},
		Handlers: map[string]projector.Handler{"MoneyDeposited": handler(1), "MoneyWithdrawn": handler(-1)},
	}
}

// codeYAML is the child's config: kafka, postgres and the source, without projections (the
// projector is the child's code). An installation of its own: the other scenarios' catalogs
// announce themselves on the same broker's kreplay.status, and serve refuses to share it.
func codeYAML(brokers []string, dbURL string) string {
	return fmt.Sprintf("installation: bench_code\nkafka:\n  brokers: [%s]\npostgres:\n  url: %q\nhttp:\n  listen: \"off\"\nsources:\n  - topic: %s\n    partitions: %d\n",
		quoteList(brokers), dbURL, bankTopic, bankPartitions)
}

// runCodeReplay replays the whole workload with the Go projector, measured as runReplay measures
// kreplay_global: from the child's start until balances_c_v1 has caught up.
func runCodeReplay(ctx context.Context, o options, c *cluster, want map[string]int64) *scenario {
	sc := &scenario{Name: "kreplay_code", Events: o.events, Extra: map[string]any{}}
	elapsed, exact, detail, note, err := codeReplayOnce(ctx, o, c, want, sc)
	return sc.finish(elapsed, exact, detail, err, note)
}

func codeReplayOnce(ctx context.Context, o options, c *cluster, want map[string]int64, sc *scenario) (elapsed time.Duration, exact bool, detail, note string, err error) {
	db, err := createDatabase(ctx, o.dbURL, o.keep)
	if err != nil {
		return 0, false, "", "", err
	}
	defer db.drop()
	proj := codeProjector().Projection()
	cfg := topology.Config{Projections: []topology.Projection{proj}}
	cfg.SetDefaults()
	batch := cfg.Projections[0].BatchSize
	note = fmt.Sprintf("child process; batch_size %d; Go projector, pipelined handlers (payload decoded in Go), ordering global", batch)
	sc.Extra["batch_size"] = batch
	dir, err := os.MkdirTemp("", "kreplay-bench-")
	if err != nil {
		return 0, false, "", "", err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfgPath := filepath.Join(dir, "kreplay.yaml")
	if err := os.WriteFile(cfgPath, []byte(codeYAML(c.addrs, db.url)), 0o600); err != nil {
		return 0, false, "", "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, false, "", "", err
	}
	args := []string{"-child", codeChildMode, "-config", cfgPath}
	if o.verbose {
		args = append(args, "-v")
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		return 0, false, "", "", err
	}
	defer pool.Close()

	key := codeProjection + "_v1"
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
			<-exited //nolint:errcheck // killed
		}
	}()
	deadline := time.NewTimer(o.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	var applied int64
	for {
		var caught *time.Time
		var state string
		qerr := pool.QueryRow(ctx, `SELECT v.state, v.caught_up_at,
			coalesce((SELECT sum(next_offset - start_offset) FROM kreplay.checkpoints WHERE version = v.key), 0)::bigint
			FROM kreplay.versions v WHERE v.key = $1`, key).Scan(&state, &caught, &applied)
		if qerr == nil {
			if state == "failed" {
				return 0, false, "", note, fmt.Errorf("%s failed during the replay (see the child's log above)", key)
			}
			if caught != nil && applied == int64(o.events) {
				break
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
		case <-tick.C:
		}
	}
	elapsed = time.Since(start)
	var backends []int
	if rows, err := pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"); err == nil {
		backends, _ = pgx.CollectRows(rows, pgx.RowTo[int])
	}
	use, ticks := win.end(cmd.Process.Pid, backends)
	use.finish(ticks)
	sc.CPU = &use
	peak := rss.stop()
	sc.PeakRSSMiB = mib(peak.hwm)
	sc.Extra["child_peak_rss_sampled_mib"] = mib(peak.maxRSS)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		reaped = true
		if err != nil {
			sc.Extra["child_exit"] = err.Error()
		}
	case <-time.After(60 * time.Second):
		sc.Extra["child_exit"] = "killed after 60s"
	}
	var created, caught time.Time
	var started *time.Time
	if err := pool.QueryRow(ctx, `SELECT created_at, started_at, caught_up_at FROM kreplay.versions WHERE key = $1`, key).Scan(&created, &started, &caught); err == nil {
		from := created
		if started != nil {
			from = *started
		}
		sc.Extra["setup_seconds"] = round2(created.Sub(start).Seconds())
		sc.Extra["catalog_replay_seconds"] = round2(caught.Sub(from).Seconds())
	}
	exact, detail, err = compareBalances(ctx, pool, pgx.Identifier{key, codeProjection}.Sanitize(), want)
	if err == nil && exact {
		var ok bool
		ok, _, err = compareBalances(ctx, pool, pgx.Identifier{"public", codeProjection}.Sanitize(), want)
		if err == nil && !ok {
			exact, detail = false, "the live view public."+codeProjection+" differs from "+key
		}
	}
	return elapsed, exact, detail, note, err
}
