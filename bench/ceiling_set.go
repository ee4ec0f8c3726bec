package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// runCeilingSet applies the workload as the fold of kreplay_fold does, without kreplay: the
// same pre-aggregated unnest upsert (store.FoldSet builds it exactly as the applier does), one
// per transaction of foldBatch events in the workload's order, on one connection, with no
// Kafka, no merge and no checkpoint. It is the most PostgreSQL does for the set-based mode on
// this machine, as ceiling_batch is for per-event handlers. Decoding is not timed; building
// the arrays is, as building the statements is in ceiling_batch.
func runCeilingSet(ctx context.Context, o options, n int, name string) *scenario {
	sc := &scenario{Name: name, Events: n}
	elapsed, exact, detail, err := applySet(ctx, o, n, sc)
	note := fmt.Sprintf("the fold's unnest upsert, %d events/tx on 1 connection, no Kafka, no checkpoint", o.foldBatch)
	return sc.finish(elapsed, exact, detail, err, note)
}

func applySet(ctx context.Context, o options, n int, sc *scenario) (time.Duration, bool, string, error) {
	db, err := createDatabase(ctx, o.dbURL, o.keep)
	if err != nil {
		return 0, false, "", err
	}
	defer db.drop()
	cfg, err := parseConfig(foldYAML(nil, "", bankTopic, "bench_set", "balances", o.foldBatch))
	if err != nil {
		return 0, false, "", err
	}
	def, err := cfg.Definition(cfg.Projections[0].Name)
	if err != nil {
		return 0, false, "", err
	}
	set, err := store.NewFoldSet(def)
	if err != nil {
		return 0, false, "", err
	}
	w, err := newWorkload(bankTopic, "balances")
	if err != nil {
		return 0, false, "", err
	}
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return 0, false, "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ddl := range def.Tables {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			return 0, false, "", fmt.Errorf("create tables: %w", err)
		}
	}
	pid := int(conn.PgConn().PID())
	bank := newBank(bankTopic, o.seed)
	var (
		elapsed time.Duration
		use     cpuUse
		ticks   cpuTimes
		pending []topology.Event
		applied int
		points  = []trendPoint{{}}
		last    = time.Now()
	)
	send := func(evs []topology.Event) error {
		win := startCPU(pid)
		start := time.Now()
		var b pgx.Batch
		for _, st := range set.Statements(evs) {
			b.Queue(st.SQL, st.Args...)
		}
		if err := sendBatch(ctx, conn, &b); err != nil {
			return fmt.Errorf("events %d to %d: %w", applied, applied+len(evs), err)
		}
		elapsed += time.Since(start)
		u, t := win.end(0, []int{pid})
		use.add(u)
		ticks.add(t)
		applied += len(evs)
		points = append(points, trendPoint{events: int64(applied), wall: elapsed.Seconds(), pgCPU: use.Postgres})
		return nil
	}
	for done := 0; done < n; {
		k := min(chunkSize, n-done)
		evs, err := w.decodeAll(bank.Events(k))
		if err != nil {
			return 0, false, "", err
		}
		done += k
		pending = append(pending, evs...)
		for len(pending) >= o.foldBatch || (done == n && len(pending) > 0) {
			m := min(o.foldBatch, len(pending))
			if err := send(pending[:m]); err != nil {
				return 0, false, "", err
			}
			pending = append(pending[:0], pending[m:]...)
		}
		if time.Since(last) > 10*time.Second {
			progress("  %d/%d events applied (%.0f/s)", applied, n, float64(applied)/elapsed.Seconds())
			last = time.Now()
		}
	}
	use.finish(ticks)
	sc.CPU = &use
	sc.Trend = summarizeTrend(points)
	exact, detail, err := compareBalances(ctx, conn, "balances", bank.Balances())
	_ = conn.Close(ctx)
	if c, cerr := readPGCounters(ctx, db.url, "balances", n); cerr == nil {
		sc.PG = c
	} else {
		progress("  %s: PostgreSQL's counters: %v", sc.Name, cerr)
	}
	return elapsed, exact, detail, err
}
