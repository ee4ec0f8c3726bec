package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/topology"
)

// scenario is one measured scenario.
type scenario struct {
	Name            string         `json:"name"`
	Events          int            `json:"events"`
	Seconds         float64        `json:"seconds"`
	EventsPerSecond float64        `json:"events_per_second"`
	PeakRSSMiB      float64        `json:"peak_rss_mib,omitempty"` // the child's VmHWM (kreplay scenarios)
	Exact           *bool          `json:"exact"`
	Detail          string         `json:"detail,omitempty"` // what the exactness check found
	Notes           string         `json:"notes"`
	CPU             *cpuUse        `json:"cpu_seconds,omitempty"` // over the timed part
	PG              *pgCounters    `json:"postgres,omitempty"`    // what PostgreSQL counted (pgstats.go)
	Trend           *trendSummary  `json:"trend,omitempty"`       // cost per event, first vs last third
	Extra           map[string]any `json:"extra,omitempty"`
	Error           string         `json:"error,omitempty"`
	Skipped         bool           `json:"skipped,omitempty"`
}

func (sc *scenario) setExtra(k string, v any) {
	if sc.Extra == nil {
		sc.Extra = map[string]any{}
	}
	sc.Extra[k] = v
}

// finish records a scenario's outcome.
func (sc *scenario) finish(elapsed time.Duration, exact bool, detail string, err error, notes string) *scenario {
	sc.Notes = notes
	if err != nil {
		sc.Error = err.Error()
		return sc
	}
	sc.Seconds = round2(elapsed.Seconds())
	if elapsed > 0 {
		sc.EventsPerSecond = math.Round(float64(sc.Events) / elapsed.Seconds())
	}
	sc.Exact, sc.Detail = &exact, detail
	return sc
}

// results is bench/results.json.
type results struct {
	Timestamp        time.Time           `json:"timestamp"`
	Events           int                 `json:"events"`
	Partitions       int                 `json:"partitions"`
	Accounts         int                 `json:"accounts"`
	Seed             uint64              `json:"seed"`
	Scenarios        []*scenario         `json:"scenarios"`
	EventsPerSecond  map[string]float64  `json:"events_per_second"`
	DurationSeconds  map[string]float64  `json:"duration_seconds"`
	PeakRSSMiB       map[string]float64  `json:"peak_rss_mib"` // the kreplay child's VmHWM, per scenario
	Ratios           map[string]*float64 `json:"ratios"`
	Exact            map[string]*bool    `json:"exact"`
	Promotion        *promotionResult    `json:"promotion,omitempty"`
	LiveLatency      *latencyResult      `json:"live_latency,omitempty"` // what max_lateness costs (latency.go)
	ParentPeakRSSMiB float64             `json:"parent_peak_rss_mib"`
	Machine          machine             `json:"machine"`
	Phases           map[string]float64  `json:"phase_seconds"` // workload production etc.
	Command          string              `json:"command"`
	Skipped          []string            `json:"skipped,omitempty"`
	Growth           *growthResult       `json:"growth,omitempty"` // -growth N (growth.go)
	Limits           *limits             `json:"limits,omitempty"` // what the machine allows (limits.go)
}

func (r *results) add(sc *scenario) {
	r.Scenarios = append(r.Scenarios, sc)
	if sc.Error != "" {
		progress("%s: ERROR: %s", sc.Name, sc.Error)
	} else if !sc.Skipped {
		progress("%s: %d events in %.2fs = %.0f events/s (%s)", sc.Name, sc.Events, sc.Seconds, sc.EventsPerSecond, sc.Detail)
	}
}

// notExact names the scenarios whose result was checked and found wrong.
func (r *results) notExact() []string {
	var bad []string
	for _, sc := range r.Scenarios {
		if sc.Exact != nil && !*sc.Exact {
			bad = append(bad, sc.Name+" ("+sc.Detail+")")
		}
	}
	if p := r.Promotion; p != nil && p.Exact != nil && !*p.Exact {
		bad = append(bad, "promotion ("+p.Detail+")")
	}
	if l := r.LiveLatency; l != nil {
		for _, run := range l.Runs {
			if run.Error == "" && !run.Exact {
				bad = append(bad, "live_latency ("+run.Pattern+", max_lateness "+run.MaxLateness+")")
			}
		}
	}
	return bad
}

// failed names the scenarios that ended in an error.
func (r *results) failed() []string {
	var out []string
	for _, sc := range r.Scenarios {
		if sc.Error != "" {
			out = append(out, sc.Name)
		}
	}
	if p := r.Promotion; p != nil && p.Error != "" {
		out = append(out, "promotion")
	}
	if l := r.LiveLatency; l != nil {
		for _, run := range l.Runs {
			if run.Error != "" {
				out = append(out, "live_latency")
				break
			}
		}
	}
	return out
}

// summarize computes the events/s map, the ratios and the exactness map.
func (r *results) summarize() {
	r.EventsPerSecond = map[string]float64{}
	r.DurationSeconds = map[string]float64{}
	r.PeakRSSMiB = map[string]float64{}
	r.Exact = map[string]*bool{}
	for _, sc := range r.Scenarios {
		if sc.Skipped {
			continue
		}
		r.Exact[sc.Name] = sc.Exact
		if sc.Error == "" {
			r.EventsPerSecond[sc.Name] = sc.EventsPerSecond
			r.DurationSeconds[sc.Name] = sc.Seconds
		}
		if sc.PeakRSSMiB > 0 {
			r.PeakRSSMiB[sc.Name] = sc.PeakRSSMiB
		}
	}
	if r.Promotion != nil && !r.Promotion.Skipped {
		r.Exact["promotion"] = r.Promotion.Exact
	}
	ratio := func(a, b string) *float64 {
		x, ok1 := r.EventsPerSecond[a]
		y, ok2 := r.EventsPerSecond[b]
		if !ok1 || !ok2 || y == 0 {
			return nil
		}
		v := math.Round(x/y*1000) / 1000
		return &v
	}
	r.Ratios = map[string]*float64{
		"kreplay_global / ceiling_batch":             ratio("kreplay_global", "ceiling_batch"),
		"kreplay_global / naive":                     ratio("kreplay_global", "naive"),
		"kreplay_partition / kreplay_global":         ratio("kreplay_partition", "kreplay_global"),
		"kreplay_global / ceiling_consume":           ratio("kreplay_global", "ceiling_consume"),
		"kreplay_partition / ceiling_batch_parallel": ratio("kreplay_partition", "ceiling_batch_parallel"),
		"kreplay_fold / ceiling_batch":               ratio("kreplay_fold", "ceiling_batch"),
		"kreplay_fold / kreplay_global":              ratio("kreplay_fold", "kreplay_global"),
		"kreplay_fold / ceiling_set":                 ratio("kreplay_fold", "ceiling_set"),
		"kreplay_code / kreplay_global":              ratio("kreplay_code", "kreplay_global"),
		"ceiling_set / ceiling_batch":                ratio("ceiling_set", "ceiling_batch"),
	}
	if g := r.growthEvents(); g > 0 {
		for _, k := range [][2]string{{"kreplay_global", "ceiling_batch"}, {"kreplay_fold", "ceiling_batch"}, {"kreplay_fold", "ceiling_set"}, {"ceiling_set", "ceiling_batch"}} {
			a, b := atSize(k[0], g), atSize(k[1], g)
			r.Ratios[a+" / "+b] = ratio(a, b)
		}
		r.summarizeGrowth(r.Events, g)
	}
	r.summarizeLimits()
	r.summarizeSpeed()
}

// summarizeSpeed sets each scenario's host speed: the fastest run of the probe over all the
// scenarios' medians, over this one's (1.00 for the fastest; speed.go).
func (r *results) summarizeSpeed() {
	fastest := 0.0
	for _, sc := range r.Scenarios {
		if v, ok := sc.Extra["probe_cpu_us"].(float64); ok && v > 0 && (fastest == 0 || v < fastest) {
			fastest = v
		}
	}
	for _, sc := range r.Scenarios {
		for _, k := range []string{"", "_first_third", "_last_third"} {
			if v, ok := sc.Extra["probe_cpu_us"+k].(float64); ok && v > 0 {
				sc.setExtra("host_speed"+k, round2(fastest/v))
			}
		}
	}
}

// growthEvents is the growth mode's size, 0 if it did not run.
func (r *results) growthEvents() int {
	for _, sc := range r.Scenarios {
		if _, size, ok := strings.Cut(sc.Name, "@"); ok && size != "" {
			return sc.Events
		}
	}
	return 0
}

// runBench runs every scenario not skipped. It returns the results so far even on error.
func runBench(ctx context.Context, o options) (*results, error) {
	r := &results{Timestamp: time.Now().UTC().Truncate(time.Second), Events: o.events, Partitions: bankPartitions,
		Accounts: bankAccounts, Seed: o.seed, Phases: map[string]float64{}, Command: strings.Join(append([]string{"go run ./bench"}, os.Args[1:]...), " ")}
	pgVersion, err := serverVersion(ctx, o.dbURL)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w (make postgres starts the local one)", redact(o.dbURL), err)
	}
	r.Machine = machineInfo(pgVersion)
	progress("%d events, %d partitions, %d accounts; %d CPUs, %s, %s", o.events, bankPartitions, bankAccounts,
		r.Machine.NumCPU, r.Machine.GoVersion, firstWords(pgVersion, 2))
	defer func() {
		r.ParentPeakRSSMiB = mib(selfPeakKiB())
		r.summarize()
	}()
	skip := func(name string) bool {
		if o.skip[name] {
			r.Skipped = append(r.Skipped, name)
			return true
		}
		return ctx.Err() != nil
	}

	if !skip("naive") {
		progress("naive: %d events, one autocommit statement each", o.naiveSample)
		r.add(measured(ctx, o, func() *scenario { return runNaive(ctx, o) }))
	}

	// Each kreplay scenario runs right after its ceiling: the machine's speed drifts (other
	// tenants of the host do not show as CPU time here), and a ratio of two scenarios a minute
	// apart took that drift in (docs/PERFORMANCE.md, "Ratios, not absolutes").
	kafkaNeeded := false
	for _, n := range []string{"ceiling_consume", "kreplay_global", "kreplay_code", "kreplay_partition", "kreplay_fold", "promotion", "live_latency"} {
		kafkaNeeded = kafkaNeeded || !o.skip[n]
	}
	var c *cluster
	bank := newBank(bankTopic, o.seed)
	kafkaScenarios := !o.skip["ceiling_consume"] || !o.skip["kreplay_global"] || !o.skip["kreplay_code"] || !o.skip["kreplay_partition"] || !o.skip["kreplay_fold"]
	if kafkaNeeded && ctx.Err() == nil {
		if c, err = newCluster(); err != nil {
			return r, err
		}
		defer c.close()
		if kafkaScenarios {
			progress("producing %d events to %s (kfake at %s)", o.events, bankTopic, strings.Join(c.addrs, ","))
			t := time.Now()
			if err := c.produce(ctx, bank, o.events); err != nil {
				return r, err
			}
			r.Phases["produce"] = round2(time.Since(t).Seconds())
		}
	}
	if !kafkaScenarios {
		bank.Events(o.events) // what the topic would hold
	}
	want := bank.Balances()

	if !skip("ceiling_batch") {
		progress("ceiling_batch: handler statements pipelined %d per transaction", batchSize)
		r.add(measured(ctx, o, func() *scenario { return runCeilingBatch(ctx, o) }))
	}
	if !skip("kreplay_global") {
		progress("kreplay_global: replaying %d events in a child process", o.events)
		r.add(measured(ctx, o, func() *scenario {
			return runReplay(ctx, o, c, want, replayRun{name: "balances_g", ordering: topology.OrderingGlobal, profile: o.cpuprofile})
		}))
	}
	if !skip("kreplay_code") {
		progress("kreplay_code: replaying %d events with a Go projector in a child process", o.events)
		r.add(measured(ctx, o, func() *scenario { return runCodeReplay(ctx, o, c, want) }))
	}
	if !skip("ceiling_batch_parallel") {
		workers := defaultWorkers()
		progress("ceiling_batch_parallel: the same on %d connections", workers)
		r.add(measured(ctx, o, func() *scenario { return runCeilingBatchParallel(ctx, o, workers) }))
	}
	if !skip("kreplay_partition") {
		progress("kreplay_partition: replaying %d events in a child process", o.events)
		r.add(measured(ctx, o, func() *scenario {
			return runReplay(ctx, o, c, want, replayRun{name: "balances_p", ordering: topology.OrderingPartition, profile: o.profileFile("partition")})
		}))
	}
	if !skip("ceiling_set") {
		progress("ceiling_set: the fold's set-based upsert, %d events per transaction", o.foldBatch)
		r.add(measured(ctx, o, func() *scenario { return runCeilingSet(ctx, o, o.events, "ceiling_set") }))
	}
	if !skip("kreplay_fold") {
		progress("kreplay_fold: replaying %d events set-based (folds) in a child process", o.events)
		r.add(measured(ctx, o, func() *scenario {
			return runReplay(ctx, o, c, want, replayRun{name: "balances_f", ordering: topology.OrderingGlobal, foldBatch: o.foldBatch, profile: o.profileFile("fold")})
		}))
	}
	if !skip("ceiling_consume") {
		progress("ceiling_consume: consuming and decoding %d records", o.events)
		r.add(measured(ctx, o, func() *scenario { return runCeilingConsume(ctx, o, c, bank.Counts()) }))
	}
	if !skip("promotion") {
		progress("promotion: %d events on %s, %d readers", o.promoEvents, promoTopic, promoReaders)
		if _, err := pgCheckpoint(ctx, o.dbURL, true); err != nil {
			progress("CHECKPOINT: %v (going on without it)", err)
		}
		r.Promotion = runPromotion(ctx, o, c)
		if r.Promotion.Error != "" {
			progress("promotion: ERROR: %s", r.Promotion.Error)
		}
	}
	if !skip("live_latency") {
		progress("live_latency: %d events/s for %s per run, max_lateness 0s and 1s", latencyRate, latencyDuration)
		r.LiveLatency = runLiveLatency(ctx, o, c)
	}
	if o.growth > 0 && ctx.Err() == nil {
		runGrowth(ctx, o, r, c, bank, skip)
	}
	return r, ctx.Err()
}

// profileFile is where a kreplay scenario's child writes its CPU profile with -profile ("": none).
func (o options) profileFile(name string) string {
	if !o.profileAll {
		return ""
	}
	return "bench/" + name + ".prof"
}

// defaultWorkers is the default number of workers of a projection with ordering: partition.
func defaultWorkers() int {
	c := topology.Config{Projections: []topology.Projection{{Name: "p"}}}
	c.SetDefaults()
	return c.Projections[0].Workers
}

// measured runs a scenario from the same starting point as the others: a PostgreSQL CHECKPOINT
// first, so that no scenario pays for the dirty pages of the previous one. It records the
// checkpoints PostgreSQL made during the scenario and the machine's load average at its start
// (other users of a shared machine show there).
func measured(ctx context.Context, o options, fn func() *scenario) *scenario {
	before, err := pgCheckpoint(ctx, o.dbURL, true)
	if err != nil {
		progress("CHECKPOINT: %v (going on without it)", err)
	}
	load := loadAverage()
	probe := startSpeedProbe()
	sc := fn()
	if pr := probe.stop(); pr.all > 0 {
		sc.setExtra("probe_cpu_us", round2(float64(pr.all)/1e3))
		if pr.first > 0 && pr.last > 0 {
			sc.setExtra("probe_cpu_us_first_third", round2(float64(pr.first)/1e3))
			sc.setExtra("probe_cpu_us_last_third", round2(float64(pr.last)/1e3))
		}
	}
	if after, err2 := pgCheckpoint(ctx, o.dbURL, false); err == nil && err2 == nil {
		sc.setExtra("pg_checkpoints_during", after-before)
	}
	if load >= 0 {
		sc.setExtra("load_average_1m_at_start", load)
	}
	return sc
}

// pgCheckpoint runs CHECKPOINT (with run) and returns the number of checkpoints the server has
// made since its statistics were reset.
func pgCheckpoint(ctx context.Context, dbURL string, run bool) (int64, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if run {
		if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
			return 0, err
		}
	}
	var n int64
	err = conn.QueryRow(ctx, "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").Scan(&n)
	return n, err
}

// loadAverage is the machine's 1-minute load average, or -1.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

func serverVersion(ctx context.Context, dbURL string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dbURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v string
	err = conn.QueryRow(cctx, "SELECT version()").Scan(&v)
	return v, err
}

// redact hides a password in a URL for messages.
func redact(s string) string {
	if i, j := strings.Index(s, "://"), strings.LastIndex(s, "@"); i >= 0 && j > i {
		if k := strings.Index(s[i+3:j], ":"); k >= 0 {
			return s[:i+3+k] + ":xxx" + s[j:]
		}
	}
	return s
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// printTable prints the results for people.
func printTable(w io.Writer, r *results) {
	fmt.Fprintf(w, "\nkreplay bench — %d events, %d partitions, %d accounts — %d CPUs, %s, %s — %s\n\n",
		r.Events, r.Partitions, r.Accounts, r.Machine.NumCPU, r.Machine.GoVersion, firstWords(r.Machine.PostgresVersion, 2),
		r.Timestamp.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tevents\tseconds\tevents/s\tpeak RSS MiB\texact\tnotes")
	for _, sc := range r.Scenarios {
		if sc.Skipped {
			continue
		}
		rss := "-"
		if sc.PeakRSSMiB > 0 {
			rss = fmt.Sprintf("%.0f", sc.PeakRSSMiB)
		}
		if sc.Error != "" {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t%s\tERROR\t%s\n", sc.Name, sc.Events, rss, sc.Error)
			continue
		}
		notes := sc.Notes
		if v, ok := sc.Extra["catalog_replay_seconds"]; ok {
			notes += fmt.Sprintf("; catalog start->caught_up %.2fs", v)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\n", sc.Name, sc.Events, sc.Seconds, sc.EventsPerSecond, rss, yesNo(sc.Exact), notes)
	}
	_ = tw.Flush()
	printConditions(w, r)
	printPGCounters(w, r)
	fmt.Fprintf(w, "\nbench process (kfake with every record, baselines) peak RSS: %.0f MiB\n", r.ParentPeakRSSMiB)

	fmt.Fprintln(w, "\nratios (same run):")
	keys := []string{"kreplay_global / ceiling_batch", "kreplay_global / naive", "kreplay_partition / kreplay_global",
		"kreplay_global / ceiling_consume", "kreplay_partition / ceiling_batch_parallel", "kreplay_fold / ceiling_batch", "kreplay_fold / kreplay_global",
		"kreplay_fold / ceiling_set", "kreplay_code / kreplay_global", "ceiling_set / ceiling_batch"}
	fixed := len(keys)
	for k := range r.Ratios {
		if !slices.Contains(keys, k) {
			keys = append(keys, k) // the growth size's (sorted below)
		}
	}
	slices.Sort(keys[fixed:])
	for _, k := range keys {
		v := r.Ratios[k]
		if v == nil {
			fmt.Fprintf(w, "  %-42s -\n", k)
			continue
		}
		fmt.Fprintf(w, "  %-42s %.3f\n", k, *v)
	}

	printLimits(w, r)
	printGrowth(w, r)
	printLatency(w, r.LiveLatency)

	if p := r.Promotion; p != nil {
		fmt.Fprintf(w, "\npromotion (%d events, %d readers on the live view, lock_timeout %.0fms):\n", p.Events, p.Readers, p.LockTimeoutMS)
		if p.Error != "" {
			fmt.Fprintf(w, "  ERROR: %s\n", p.Error)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  phase\tswap\trouted\tattempts\tswap ms\tcall ms\treaders p50 ms\tp99 ms\tmax ms (at)\tmax during swap ms\t>lock_timeout\treader errors\tlong reader held ms")
		for _, ph := range p.Phases {
			held := "-"
			if ph.LongReader {
				held = fmt.Sprintf("%.0f", ph.LongReaderHeldMS)
				if ph.LongReaderError != "" {
					held += " (" + ph.LongReaderError + ")"
				}
			}
			swap := fmt.Sprintf("%s->%s\t%s\t%d\t%.1f\t%.0f", ph.From, ph.To, map[bool]string{true: "yes", false: "no"}[ph.Routed], ph.Attempts, ph.SwapMS, ph.CallMS)
			if ph.Kind == idleKind {
				swap = "(none)\t-\t-\t-\t-"
			}
			during := fmt.Sprintf("%.1f", ph.DuringSwapMaxMS)
			if ph.Kind == idleKind {
				during = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%.2f\t%.2f\t%.1f (%+.0fms)\t%s\t%d\t%d/%d\t%s\n", ph.Name, swap,
				ph.ReaderP50MS, ph.ReaderP99MS, ph.ReaderMaxMS, ph.ReaderMaxAtMS, during, ph.OverLockTimeout,
				ph.ReaderErrors, ph.ReaderQueries, held)
		}
		_ = tw.Flush()
		if p.Exact != nil {
			fmt.Fprintf(w, "  live view after the swaps: %s (%s)\n", yesNo(p.Exact), p.Detail)
		}
		for _, e := range p.FirstErrors {
			fmt.Fprintf(w, "  reader error: %s\n", e)
		}
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "\nskipped: %s\n", strings.Join(r.Skipped, ", "))
	}
}

// printConditions prints where each scenario's CPU time went and what else happened meanwhile:
// on a shared machine, "other" is someone else's load, and a run with much of it is not one to
// quote.
func printConditions(w io.Writer, r *results) {
	fmt.Fprintf(w, "\nconditions (CPU seconds over the timed part; kreplay = the child, bench = this process with kfake and the baselines' clients,\nPG = the scenario's PostgreSQL backends, other = the rest of the machine: other users, PostgreSQL's background work, the kernel;\nhost speed = a fixed piece of work's CPU time in the run's fastest scenario over its time in this one, 1.00 fastest,\nand in brackets the same over the first and the last third of the scenario's time; setup and checks included):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  scenario\tmachine busy\tkreplay\tbench\tPG\tother\tPG checkpoints\tload at start\thost speed")
	for _, sc := range r.Scenarios {
		if sc.Skipped || sc.Error != "" || sc.CPU == nil {
			continue
		}
		u := sc.CPU
		kr := "-"
		if sc.Extra["batch_size"] != nil {
			kr = fmt.Sprintf("%.1f", u.Child)
		}
		cp, load, speed := "-", "-", "-"
		if v, ok := sc.Extra["pg_checkpoints_during"]; ok {
			cp = fmt.Sprint(v)
		}
		if v, ok := sc.Extra["load_average_1m_at_start"]; ok {
			load = fmt.Sprintf("%.2f", v)
		}
		if v, ok := sc.Extra["host_speed"]; ok {
			speed = fmt.Sprintf("%.2f", v)
			if f, ok := sc.Extra["host_speed_first_third"]; ok {
				speed += fmt.Sprintf(" (%.2f -> %.2f)", f, sc.Extra["host_speed_last_third"])
			}
		}
		fmt.Fprintf(tw, "  %s\t%.0f%%\t%s\t%.1f\t%.1f\t%.1f\t%s\t%s\t%s\n", sc.Name, u.Busy*100, kr, u.Bench, u.Postgres, u.Other, cp, load, speed)
	}
	_ = tw.Flush()
}

func yesNo(b *bool) string {
	switch {
	case b == nil:
		return "-"
	case *b:
		return "yes"
	default:
		return "NO"
	}
}

// writeResults writes results.json.
func writeResults(path string, r *results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
