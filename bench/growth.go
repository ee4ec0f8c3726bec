package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/topology"
)

// The growth mode (-growth N): after the scenarios at -events, the topic is extended to N events
// and ceiling_batch, ceiling_set, kreplay_global and kreplay_fold run again over all N, in the same
// run. It reports how the cost of an event at N compares with its cost at -events, for kreplay
// and for the ceilings: a replay whose cost per event grows with the history shows a ratio above
// the ceilings'.

// growthScenarios are the scenarios run again at the growth size, each kreplay scenario right
// after its ceiling (see runBench).
var growthScenarios = []string{"ceiling_batch", "kreplay_global", "ceiling_set", "kreplay_fold"}

// growthResult is the growth mode's part of results.json.
type growthResult struct {
	From int         `json:"from_events"`
	To   int         `json:"to_events"`
	Rows []growthRow `json:"scenarios"`
}

// growthRow compares one scenario at the two sizes: each ratio is the figure per event at To
// over the figure per event at From (1 = flat).
type growthRow struct {
	Scenario      string   `json:"scenario"`
	CostRatio     *float64 `json:"wall_per_event_ratio"`
	PGCPURatio    *float64 `json:"pg_cpu_per_event_ratio,omitempty"`
	ChildCPURatio *float64 `json:"child_cpu_per_event_ratio,omitempty"`
	RSSRatio      *float64 `json:"peak_rss_ratio,omitempty"`
	RSSP90Ratio   *float64 `json:"rss_p90_ratio,omitempty"` // of the 90th percentile of the RSS samples
	// LastThird is the per-event wall time of the last third of the events at To over that of
	// the first third, in the To run: growth within one run.
	LastThird *float64 `json:"last_third_over_first_third,omitempty"`
}

// sizeName is a size for a scenario's name: 3000000 -> 3M, 300000 -> 300k.
func sizeName(n int) string {
	switch {
	case n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// atSize is a scenario's name at the growth size.
func atSize(name string, n int) string { return name + "@" + sizeName(n) }

// runGrowth extends the workload's topic to o.growth events and runs the growth scenarios over
// all of them. bank has generated what the topic holds so far.
func runGrowth(ctx context.Context, o options, r *results, c *cluster, bank *bankgen.Bank, skip func(string) bool) {
	n := o.growth
	g := o
	g.events, g.batchEvents = n, 0
	if c != nil && (!o.skip["kreplay_global"] || !o.skip["kreplay_fold"]) {
		progress("growth: producing %d more events to %s (%d in all)", n-o.events, bankTopic, n)
		if err := c.produce(ctx, bank, n-o.events); err != nil {
			r.add(&scenario{Name: atSize("kreplay_global", n), Events: n, Error: err.Error()})
			return
		}
	} else {
		bank.Events(n - o.events) // only the balances: no replay reads the topic
	}
	want := bank.Balances()
	named := func(sc *scenario, name string) *scenario { sc.Name = name; return sc }
	for _, s := range growthScenarios {
		name := atSize(s, n)
		if skip(s) {
			continue
		}
		progress("%s: %d events", name, n)
		var sc *scenario
		switch s {
		case "ceiling_batch":
			sc = measured(ctx, o, func() *scenario { return named(runCeilingBatch(ctx, g), name) })
		case "ceiling_set":
			sc = measured(ctx, o, func() *scenario { return runCeilingSet(ctx, g, n, name) })
		case "kreplay_global":
			sc = measured(ctx, o, func() *scenario {
				return named(runReplay(ctx, g, c, want, replayRun{name: "balances_g", ordering: topology.OrderingGlobal}), name)
			})
		case "kreplay_fold":
			sc = measured(ctx, o, func() *scenario {
				return named(runReplay(ctx, g, c, want, replayRun{name: "balances_f", ordering: topology.OrderingGlobal, foldBatch: o.foldBatch}), name)
			})
		}
		r.add(sc)
	}
}

// summarizeGrowth compares each growth scenario at the two sizes.
func (r *results) summarizeGrowth(from, to int) {
	if to == 0 {
		return
	}
	byName := map[string]*scenario{}
	for _, sc := range r.Scenarios {
		if !sc.Skipped && sc.Error == "" && sc.Exact != nil {
			byName[sc.Name] = sc
		}
	}
	g := &growthResult{From: from, To: to}
	perEvent := func(v float64, n int) float64 { return v / float64(n) }
	ratio := func(a, b float64) *float64 {
		if b <= 0 || a <= 0 {
			return nil
		}
		v := math.Round(a/b*1000) / 1000
		return &v
	}
	for _, s := range growthScenarios {
		a, b := byName[s], byName[atSize(s, to)]
		if a == nil || b == nil {
			continue
		}
		row := growthRow{Scenario: s, CostRatio: ratio(perEvent(b.Seconds, b.Events), perEvent(a.Seconds, a.Events))}
		if a.CPU != nil && b.CPU != nil {
			row.PGCPURatio = ratio(perEvent(b.CPU.Postgres, b.Events), perEvent(a.CPU.Postgres, a.Events))
			row.ChildCPURatio = ratio(perEvent(b.CPU.Child, b.Events), perEvent(a.CPU.Child, a.Events))
		}
		row.RSSRatio = ratio(b.PeakRSSMiB, a.PeakRSSMiB)
		p90 := func(sc *scenario) float64 { v, _ := sc.Extra["child_rss_p90_mib"].(float64); return v }
		row.RSSP90Ratio = ratio(p90(b), p90(a))
		if t := b.Trend; t != nil {
			row.LastThird = ratio(t.LastWallUS, t.FirstWallUS)
		}
		g.Rows = append(g.Rows, row)
	}
	r.Growth = g
}

// printGrowth prints the growth mode's comparison.
func printGrowth(w io.Writer, r *results) {
	g := r.Growth
	if g == nil {
		return
	}
	fmt.Fprintf(w, "\ngrowth: cost per event at %s over its cost at %s (same run; 1.00 = flat; kreplay's target: within 1.10)\n",
		sizeName(g.To), sizeName(g.From))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  scenario\twall/event\tPG CPU/event\tchild CPU/event\tpeak RSS\tRSS p90\tlast/first third at "+sizeName(g.To))
	f := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f", *v)
	}
	for _, row := range g.Rows {
		child := "-"
		if strings.HasPrefix(row.Scenario, "kreplay_") {
			child = f(row.ChildCPURatio)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Scenario, f(row.CostRatio), f(row.PGCPURatio), child, f(row.RSSRatio), f(row.RSSP90Ratio), f(row.LastThird))
	}
	_ = tw.Flush()
}
