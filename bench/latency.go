package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/store"
)

// The live latency scenario: what max_lateness costs a live version.
const (
	latencyRate     = 400             // events/s produced in each run
	latencyDuration = 8 * time.Second // of producing, per run
	latencyTick     = 20 * time.Millisecond
)

// latencyRun is one run of the live latency scenario: a projection with max_lateness tailing
// events produced at a steady rate, spread over the topic's partitions (busy) or all on one
// partition while the others are quiet.
type latencyRun struct {
	Pattern     string  `json:"pattern"`      // busy | one_partition
	MaxLateness string  `json:"max_lateness"` // the projection's setting
	Events      int     `json:"events"`
	P50MS       float64 `json:"p50_ms"` // produce (before ProduceSync) to applied (the handler's clock_timestamp)
	P99MS       float64 `json:"p99_ms"`
	MaxMS       float64 `json:"max_ms"`
	Late        int64   `json:"late_events"`
	Exact       bool    `json:"exact"` // every produced event applied exactly once
	Error       string  `json:"error,omitempty"`
}

// latencyResult is the live latency scenario.
type latencyResult struct {
	Rate        int           `json:"events_per_second"`
	SecondsEach float64       `json:"seconds_each"`
	Runs        []*latencyRun `json:"runs"`
}

// runLiveLatency measures the produce-to-applied latency of a live version with max_lateness 0s
// and 1s (the default), with every partition busy and with one partition busy and the others
// quiet (then every event waits max_lateness, for the quiet partitions cannot show a later
// record).
func runLiveLatency(ctx context.Context, o options, c *cluster) *latencyResult {
	res := &latencyResult{Rate: latencyRate, SecondsEach: latencyDuration.Seconds()}
	n := 0
	for _, pattern := range []string{"busy", "one_partition"} {
		for _, lateness := range []string{"0s", "1s"} {
			n++
			run := &latencyRun{Pattern: pattern, MaxLateness: lateness}
			if err := liveLatency(ctx, o, c, fmt.Sprintf("bank.latency%d", n), run); err != nil {
				run.Error = err.Error()
			}
			progress("  live_latency %s, max_lateness %s: %d events, p50 %.1fms, p99 %.1fms, max %.1fms, %d late%s",
				pattern, lateness, run.Events, run.P50MS, run.P99MS, run.MaxMS, run.Late, errSuffix(run.Error))
			res.Runs = append(res.Runs, run)
			if ctx.Err() != nil {
				return res
			}
		}
	}
	return res
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " — ERROR: " + e
}

func liveLatency(ctx context.Context, o options, c *cluster, topic string, run *latencyRun) error {
	if _, err := kadm.NewClient(c.producer).CreateTopic(ctx, bankPartitions, 1, nil, topic); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	db, err := createDatabase(ctx, o.dbURL, o.keep)
	if err != nil {
		return err
	}
	defer db.drop()
	yaml := fmt.Sprintf(`kafka:
  brokers: [%s]
postgres:
  url: %q
installation: %s
http:
  listen: "off"
sources:
  - topic: %s
    partitions: %d
projections:
  - name: latency
    max_lateness: %s
    sources: [%s]
    tables:
      - CREATE TABLE applied (event_id text PRIMARY KEY, produced_at timestamptz NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())
    handlers:
      E: INSERT INTO applied (event_id, produced_at) VALUES (@event_id, (@data->>'produced_at')::timestamptz)
`, quoteList(c.addrs), db.url, db.name, topic, bankPartitions, run.MaxLateness, topic)
	cfg, err := parseConfig(yaml)
	if err != nil {
		return err
	}
	p, stop, err := startProcessor(ctx, cfg, o, "live_latency")
	if err != nil {
		return err
	}
	defer stop()
	if err := waitVersion(ctx, p, "latency_v1", func(v *store.Version) bool { return v.State == store.StateLive }); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// One event on each partition first: measuring starts once the version consumes them all.
	var warm []*kgo.Record
	for part := range int32(bankPartitions) {
		warm = append(warm, latencyRecord(topic, part, fmt.Sprintf("w%d", part)))
	}
	if err := c.producer.ProduceSync(ctx, warm...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	if err := waitApplied(ctx, conn, len(warm)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}

	perTick := int(latencyRate * latencyTick / time.Second)
	tick := time.NewTicker(latencyTick)
	defer tick.Stop()
	start := time.Now()
	for i := 0; time.Since(start) < latencyDuration; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		recs := make([]*kgo.Record, 0, perTick)
		for range perTick {
			part := int32(0)
			if run.Pattern == "busy" {
				part = int32(i % bankPartitions)
			}
			recs = append(recs, latencyRecord(topic, part, fmt.Sprintf("e%06d", i)))
			i++
		}
		if err := c.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		run.Events += len(recs)
	}

	if err := waitApplied(ctx, conn, len(warm)+run.Events); err != nil {
		return err
	}
	run.Exact = true
	time.Sleep(200 * time.Millisecond) // the late count is saved just after its batch commits
	err = conn.QueryRow(ctx, `SELECT
			percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		FROM (SELECT extract(epoch FROM applied_at - produced_at) * 1000 AS ms FROM latency_v1.applied WHERE event_id LIKE 'e%') l`).
		Scan(&run.P50MS, &run.P99MS, &run.MaxMS)
	if err != nil {
		return err
	}
	run.P50MS, run.P99MS, run.MaxMS = round2(run.P50MS), round2(run.P99MS), round2(run.MaxMS)
	v, err := p.Store().Version(ctx, "latency_v1")
	if err != nil {
		return err
	}
	run.Late = v.LateEvents
	return nil
}

// printLatency prints the live latency scenario.
func printLatency(w io.Writer, l *latencyResult) {
	if l == nil {
		return
	}
	fmt.Fprintf(w, "\nlive latency (%d events/s for %.0fs per run; produce to applied):\n", l.Rate, l.SecondsEach)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  pattern\tmax_lateness\tevents\tp50 ms\tp99 ms\tmax ms\tlate\texact")
	for _, r := range l.Runs {
		if r.Error != "" {
			fmt.Fprintf(tw, "  %s\t%s\tERROR: %s\n", r.Pattern, r.MaxLateness, r.Error)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t%s\n", r.Pattern, r.MaxLateness, r.Events, r.P50MS, r.P99MS, r.MaxMS, r.Late, yesNo(&r.Exact))
	}
	_ = tw.Flush()
}

// latencyRecord is an event created now that carries the time it was produced.
func latencyRecord(topic string, part int32, id string) *kgo.Record {
	now := time.Now()
	return bankgen.Record(topic, part, bankgen.Event{ID: id, Type: "E", AggregateID: "a",
		CreatedAt: now, Data: map[string]string{"produced_at": now.Format(time.RFC3339Nano)}})
}

// waitApplied waits until the live version has applied n events (30s at most).
func waitApplied(ctx context.Context, conn *pgx.Conn, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM latency_v1.applied").Scan(&got); err != nil {
			return err
		}
		if got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d events applied after 30s", got, n)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}
