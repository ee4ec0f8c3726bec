package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// What a scenario cost PostgreSQL, from the server's own counters and the backends' CPU time:
// figures that depend far less on a shared machine's load than seconds do. The counters are
// the scenario's database's (each scenario has its own), read once its backends have exited
// (a backend reports its statistics at most once a second while it runs, and when it exits).

// pgCounters is what PostgreSQL counted in a scenario's database.
type pgCounters struct {
	// BuffersPerEvent is shared-buffer accesses (hits and reads) per event: the pages the
	// scenario's statements touched, catalog included.
	BuffersPerEvent float64 `json:"buffers_per_event"`
	// Commits is the transactions committed in the database.
	Commits int64 `json:"commits"`
	// Table is the projection table; Checkpoints kreplay.checkpoints (kreplay scenarios).
	Table       *tableCounters `json:"table,omitempty"`
	Checkpoints *tableCounters `json:"checkpoints,omitempty"`
	// AdvanceCalls and AdvanceMSPerCall are kreplay.advance's (track_functions = pl).
	AdvanceCalls     int64   `json:"advance_calls,omitempty"`
	AdvanceMSPerCall float64 `json:"advance_ms_per_call,omitempty"`
}

// tableCounters is one table's pg_stat_user_tables line and size at the end of a scenario.
type tableCounters struct {
	Updates     int64   `json:"updates"`
	HOTPercent  float64 `json:"hot_percent"` // updates that were HOT (no new index entry)
	DeadAtEnd   int64   `json:"dead_tuples_at_end"`
	Pages       int64   `json:"pages"`
	IndexPages  int64   `json:"index_pages"`
	Autovacuums int64   `json:"autovacuums"`
}

// trackFunctions makes the database count its PL/pgSQL functions' calls and time
// (pg_stat_user_functions). Best effort: it needs a superuser.
func trackFunctions(ctx context.Context, adminURL, name string) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, _ = conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET track_functions = 'pl'")
}

// readPGCounters reads the counters of the database of url for a scenario of events events,
// table being its projection table (schema-qualified or not). It first waits (2s at most) for
// the database's other backends to exit, so that they have reported their statistics.
func readPGCounters(ctx context.Context, url, table string, events int) (*pgCounters, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var others int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&others); err != nil || others == 0 {
			break
		}
	}
	_, _ = conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()")
	c := &pgCounters{}
	var blocks int64
	if err := conn.QueryRow(ctx, `SELECT blks_hit + blks_read, xact_commit FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&blocks, &c.Commits); err != nil {
		return nil, err
	}
	c.BuffersPerEvent = round2(float64(blocks) / float64(max(events, 1)))
	if c.Table, err = readTable(ctx, conn, table); err != nil {
		return nil, err
	}
	var isKreplay bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('kreplay.checkpoints') IS NOT NULL`).Scan(&isKreplay); err == nil && isKreplay {
		if c.Checkpoints, err = readTable(ctx, conn, "kreplay.checkpoints"); err != nil {
			return nil, err
		}
		var self float64
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(self_time), 0) FROM pg_stat_user_functions
			WHERE schemaname = 'kreplay' AND funcname = 'advance'`).Scan(&c.AdvanceCalls, &self); err == nil && c.AdvanceCalls > 0 {
			c.AdvanceMSPerCall = round3(self / float64(c.AdvanceCalls))
		}
	}
	return c, nil
}

func readTable(ctx context.Context, conn *pgx.Conn, table string) (*tableCounters, error) {
	var t tableCounters
	var hot int64
	err := conn.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count,
			pg_relation_size(relid) / current_setting('block_size')::int, pg_indexes_size(relid) / current_setting('block_size')::int
		FROM pg_stat_user_tables WHERE relid = $1::regclass`, table).
		Scan(&t.Updates, &hot, &t.DeadAtEnd, &t.Autovacuums, &t.Pages, &t.IndexPages)
	if err != nil {
		return nil, fmt.Errorf("statistics of %s: %w", table, err)
	}
	if t.Updates > 0 {
		t.HOTPercent = round2(100 * float64(hot) / float64(t.Updates))
	}
	return &t, nil
}

// trendPoint is where a scenario was at one moment: events applied, and the wall-clock and CPU
// seconds spent since its start.
type trendPoint struct {
	events             int64
	wall, child, pgCPU float64
}

// trendSummary compares the cost of an event in the first and the last third of a scenario's
// events, in the same run: a cost that grows with the history shows as a Last above First that
// repeats from run to run, whatever the machine's load.
type trendSummary struct {
	FirstWallUS  float64 `json:"first_third_wall_us_per_event"`
	LastWallUS   float64 `json:"last_third_wall_us_per_event"`
	FirstPGUS    float64 `json:"first_third_pg_cpu_us_per_event"`
	LastPGUS     float64 `json:"last_third_pg_cpu_us_per_event"`
	FirstChildUS float64 `json:"first_third_child_cpu_us_per_event,omitempty"`
	LastChildUS  float64 `json:"last_third_child_cpu_us_per_event,omitempty"`
}

// summarizeTrend splits points (cumulative, in order) into thirds of the events.
func summarizeTrend(points []trendPoint) *trendSummary {
	if len(points) < 4 {
		return nil
	}
	first, end := points[0], points[len(points)-1]
	n := end.events - first.events
	if n <= 0 {
		return nil
	}
	at := func(e int64) trendPoint { // the first point at or past e events
		for _, p := range points {
			if p.events >= e {
				return p
			}
		}
		return end
	}
	a, b := at(first.events+n/3), at(first.events+2*n/3)
	if a.events <= first.events || end.events <= b.events {
		return nil
	}
	us := func(from, to trendPoint, f func(trendPoint) float64) float64 {
		return round3((f(to) - f(from)) * 1e6 / float64(to.events-from.events))
	}
	wall := func(p trendPoint) float64 { return p.wall }
	pg := func(p trendPoint) float64 { return p.pgCPU }
	child := func(p trendPoint) float64 { return p.child }
	return &trendSummary{
		FirstWallUS: us(first, a, wall), LastWallUS: us(b, end, wall),
		FirstPGUS: us(first, a, pg), LastPGUS: us(b, end, pg),
		FirstChildUS: us(first, a, child), LastChildUS: us(b, end, child),
	}
}

// cpuTracker sums the CPU time processes used since it first saw them, remembering the last
// figure of a process that has exited.
type cpuTracker struct {
	start, last map[int]time.Duration
}

func newCPUTracker() *cpuTracker {
	return &cpuTracker{start: map[int]time.Duration{}, last: map[int]time.Duration{}}
}

// sample reads the CPU time of pids (new ones count from now) and returns the total in seconds.
func (c *cpuTracker) sample(pids []int) float64 {
	for _, p := range pids {
		v := procCPU(p)
		if _, ok := c.start[p]; !ok {
			c.start[p] = v
		}
		if v > 0 {
			c.last[p] = v
		}
	}
	var total time.Duration
	for p, v := range c.last {
		total += v - c.start[p]
	}
	return total.Seconds()
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// printPGCounters prints what PostgreSQL counted per scenario, and the per-event cost in the
// first and last third of each scenario's events.
func printPGCounters(w io.Writer, r *results) {
	some := false
	for _, sc := range r.Scenarios {
		some = some || sc.PG != nil || sc.Trend != nil
	}
	if !some {
		return
	}
	fmt.Fprintf(w, "\nPostgreSQL's counters (the scenario's database; load-independent) and cost per event by third of the events\n"+
		"(µs per event of wall time, of the PostgreSQL backends' CPU and of the kreplay child's CPU, first third -> last third):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  scenario\tbuffers/event\ttable upd HOT%\ttable pages\ttable dead\tautovac\tcheckpoint pages\tevents/advance\tadvance ms/call\twall µs/ev\tPG CPU µs/ev\tchild CPU µs/ev")
	for _, sc := range r.Scenarios {
		if sc.Skipped || sc.Error != "" || (sc.PG == nil && sc.Trend == nil) {
			continue
		}
		buf, hot, pages, dead, av, cp, perAdv, adv := "-", "-", "-", "-", "-", "-", "-", "-"
		if c := sc.PG; c != nil {
			buf = fmt.Sprintf("%.1f", c.BuffersPerEvent)
			if t := c.Table; t != nil {
				hot, pages, dead, av = fmt.Sprintf("%.1f", t.HOTPercent), fmt.Sprint(t.Pages), fmt.Sprint(t.DeadAtEnd), fmt.Sprint(t.Autovacuums)
			}
			if t := c.Checkpoints; t != nil {
				cp = fmt.Sprint(t.Pages)
				av += fmt.Sprintf("+%d", t.Autovacuums)
			}
			if c.AdvanceCalls > 0 {
				perAdv = fmt.Sprintf("%.0f", float64(sc.Events)/float64(c.AdvanceCalls))
				adv = fmt.Sprintf("%.3f", c.AdvanceMSPerCall)
			}
		}
		wall, pg, child := "-", "-", "-"
		if t := sc.Trend; t != nil {
			wall = fmt.Sprintf("%.2f -> %.2f", t.FirstWallUS, t.LastWallUS)
			pg = fmt.Sprintf("%.2f -> %.2f", t.FirstPGUS, t.LastPGUS)
			if t.FirstChildUS > 0 || t.LastChildUS > 0 {
				child = fmt.Sprintf("%.2f -> %.2f", t.FirstChildUS, t.LastChildUS)
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sc.Name, buf, hot, pages, dead, av, cp, perAdv, adv, wall, pg, child)
	}
	_ = tw.Flush()
}
