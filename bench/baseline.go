package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/topology"
)

// runNaive applies the first sample events with one autocommit statement each: a round trip
// and a commit (a WAL flush) per event, the way the seeds' projectors apply events.
func runNaive(ctx context.Context, o options) *scenario {
	sc := &scenario{Name: "naive", Events: o.naiveSample}
	if o.naiveSample == 0 {
		sc.Skipped = true
		return sc
	}
	elapsed, exact, detail, err := applyDirect(ctx, o, o.naiveSample, 1, 1, sc)
	return sc.finish(elapsed, exact, detail, err, "1 autocommit upsert per event (prepared), sample of the workload's first events")
}

// batchN is how many events the ceiling_batch scenarios apply.
func (o options) batchN() int {
	if o.batchEvents > 0 {
		return min(o.batchEvents, o.events)
	}
	return o.events
}

// runCeilingBatch applies the workload's handler statements pipelined batchSize per
// transaction with pgx.Batch on one connection: the most PostgreSQL does for per-event SQL in
// one order on this machine, without Kafka, decoding, merging or checkpoints.
func runCeilingBatch(ctx context.Context, o options) *scenario {
	n := o.batchN()
	sc := &scenario{Name: "ceiling_batch", Events: n}
	elapsed, exact, detail, err := applyDirect(ctx, o, n, batchSize, 1, sc)
	note := fmt.Sprintf("handler SQL pipelined %d/tx on 1 connection (pgx.Batch, cached prepared statements); %d of %d events", batchSize, n, o.events)
	return sc.finish(elapsed, exact, detail, err, note)
}

// runCeilingBatchParallel is ceiling_batch with the events split by partition over conns
// connections, each applying its partitions in order: the PostgreSQL limit for ordering:
// partition with that many workers.
func runCeilingBatchParallel(ctx context.Context, o options, conns int) *scenario {
	n := o.batchN()
	sc := &scenario{Name: "ceiling_batch_parallel", Events: n}
	elapsed, exact, detail, err := applyDirect(ctx, o, n, batchSize, conns, sc)
	note := fmt.Sprintf("as ceiling_batch, partitions spread over %d connections (the default workers); %d of %d events", conns, n, o.events)
	return sc.finish(elapsed, exact, detail, err, note)
}

// applyDirect generates n events, decodes them (untimed) and applies their handler statements
// per transactions of perTx (1: autocommit, one statement per event) on conns connections
// (partition p on connection p mod conns, each partition in order), timing the PostgreSQL part
// only (and the machine's CPU use over the timed parts). It then compares the table with the
// balances the generator implies.
func applyDirect(ctx context.Context, o options, n, perTx, conns int, sc *scenario) (time.Duration, bool, string, error) {
	db, err := createDatabase(ctx, o.dbURL, o.keep)
	if err != nil {
		return 0, false, "", err
	}
	defer db.drop()
	w, err := newWorkload(bankTopic, "balances")
	if err != nil {
		return 0, false, "", err
	}
	cs := make([]*pgx.Conn, conns)
	for i := range cs {
		if cs[i], err = pgx.Connect(ctx, db.url); err != nil {
			return 0, false, "", err
		}
		defer cs[i].Close(context.WithoutCancel(ctx))
	}
	for _, ddl := range w.tables {
		if _, err := cs[0].Exec(ctx, ddl); err != nil {
			return 0, false, "", fmt.Errorf("create tables: %w", err)
		}
	}
	bank := newBank(bankTopic, o.seed)
	var elapsed time.Duration
	var use cpuUse
	var ticks cpuTimes
	pids := make([]int, len(cs))
	for i, c := range cs {
		pids[i] = int(c.PgConn().PID())
	}
	last := time.Now()
	parts := make([][]topology.Event, conns)
	points := []trendPoint{{}}
	for done := 0; done < n; {
		k := min(chunkSize, n-done)
		evs, err := w.decodeAll(bank.Events(k))
		if err != nil {
			return 0, false, "", err
		}
		for i := range parts {
			parts[i] = parts[i][:0]
		}
		for _, ev := range evs {
			i := int(ev.Partition) % conns
			parts[i] = append(parts[i], ev)
		}
		win := startCPU(pids...)
		start := time.Now()
		var g errgroup.Group
		for i, conn := range cs {
			g.Go(func() error { return applyEvents(ctx, conn, w, parts[i], perTx) })
		}
		if err := g.Wait(); err != nil {
			return 0, false, "", fmt.Errorf("events %d to %d: %w", done, done+k, err)
		}
		elapsed += time.Since(start)
		u, t := win.end(0, pids)
		use.add(u)
		ticks.add(t)
		done += k
		points = append(points, trendPoint{events: int64(done), wall: elapsed.Seconds(), pgCPU: use.Postgres})
		if time.Since(last) > 10*time.Second {
			progress("  %d/%d events applied (%.0f/s)", done, n, float64(done)/elapsed.Seconds())
			last = time.Now()
		}
	}
	use.finish(ticks)
	sc.CPU = &use
	sc.Trend = summarizeTrend(points)
	exact, detail, err := compareBalances(ctx, cs[0], "balances", bank.Balances())
	for _, c := range cs {
		_ = c.Close(ctx)
	}
	if c, cerr := readPGCounters(ctx, db.url, "balances", n); cerr == nil {
		sc.PG = c
	} else {
		progress("  %s: PostgreSQL's counters: %v", sc.Name, cerr)
	}
	return elapsed, exact, detail, err
}

// applyEvents applies events in order on conn, perTx per transaction (1: autocommit).
func applyEvents(ctx context.Context, conn *pgx.Conn, w *workload, evs []topology.Event, perTx int) error {
	var batch pgx.Batch
	for i := range evs {
		sql, args, err := w.statement(&evs[i])
		if err != nil {
			return err
		}
		if perTx == 1 {
			if _, err := conn.Exec(ctx, sql, args...); err != nil {
				return err
			}
			continue
		}
		batch.Queue(sql, args...)
		if batch.Len() == perTx || i == len(evs)-1 {
			if err := sendBatch(ctx, conn, &batch); err != nil {
				return err
			}
			batch = pgx.Batch{}
		}
	}
	return nil
}

// sendBatch sends a pipelined batch (one implicit transaction, as kreplay's applier does) and
// reads every result.
func sendBatch(ctx context.Context, conn *pgx.Conn, b *pgx.Batch) error {
	br := conn.SendBatch(ctx, b)
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
	}
	return br.Close()
}

// runCeilingConsume reads every record of the workload from Kafka with one franz-go consumer
// (PollFetches, no group) and decodes each with the topology decoder kreplay uses: the most the
// Kafka side delivers to one process on this machine, without PostgreSQL. Exactness: every
// record decodes, and the events per account equal the generator's.
func runCeilingConsume(ctx context.Context, o options, c *cluster, wantCounts map[string]int64) *scenario {
	sc := &scenario{Name: "ceiling_consume", Events: o.events}
	elapsed, exact, detail, err := consumeAll(ctx, c, o.events, wantCounts, sc)
	return sc.finish(elapsed, exact, detail, err, "franz-go PollFetches (no group) + topology JSON decoder, one goroutine; in the bench process with kfake")
}

func consumeAll(ctx context.Context, c *cluster, n int, wantCounts map[string]int64, sc *scenario) (time.Duration, bool, string, error) {
	cfg, err := parseConfig(projectionYAML(nil, "", bankTopic, "bench_consume", "balances", "global"))
	if err != nil {
		return 0, false, "", err
	}
	src, _ := cfg.Source(bankTopic)
	dec, err := topology.NewDecoder(*src)
	if err != nil {
		return 0, false, "", err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...), kgo.ConsumeTopics(bankTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, false, "", err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	counts := make(map[string]int64, bankAccounts)
	var ev topology.Event
	var tr topology.Record
	var decodeErr error
	got := 0
	win := startCPU()
	start := time.Now()
	for got < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, false, "", fmt.Errorf("consumed %d of %d records: %w", got, n, err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("fetch %s[%d]: %w", t, p, err))
		})
		if ferr != nil {
			return 0, false, "", ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			if err := dec.Decode(kafkaconn.Record(r, &tr), &ev); err != nil {
				decodeErr = errors.Join(decodeErr, err)
				return
			}
			counts[ev.AggregateID]++
			got++
		})
		if decodeErr != nil {
			return 0, false, "", decodeErr
		}
	}
	elapsed := time.Since(start)
	use, ticks := win.end(0, nil)
	use.finish(ticks)
	sc.CPU = &use
	if got != n {
		return elapsed, false, fmt.Sprintf("consumed %d records, want %d", got, n), nil
	}
	for a, want := range wantCounts {
		if counts[a] != want {
			return elapsed, false, fmt.Sprintf("account %s: %d events consumed, want %d", a, counts[a], want), nil
		}
	}
	if len(counts) != len(wantCounts) {
		return elapsed, false, fmt.Sprintf("%d accounts consumed, want %d", len(counts), len(wantCounts)), nil
	}
	return elapsed, true, fmt.Sprintf("%d records decoded, events per account exact", got), nil
}
