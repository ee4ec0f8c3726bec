// Command bench measures kreplay's replay throughput side by side with the limits it works
// within, in one run on one machine, so that the ratios between the figures mean something even
// on a shared machine where the absolute numbers move from run to run.
//
// It generates one bank-account workload (bankgen.Bank: MoneyDeposited / MoneyWithdrawn
// events over 10,000 accounts, 8 partitions) and measures:
//
//	naive              one autocommit upsert per event, the way the seeds apply events
//	ceiling_batch      the same handler statements pipelined 1,000 per transaction (no Kafka)
//	ceiling_batch_parallel  the same over as many connections as ordering: partition has workers
//	ceiling_set        the fold's set-based upsert, one per batch of -fold-batch events (no Kafka)
//	ceiling_consume    consuming and decoding every record from Kafka (no PostgreSQL)
//	kreplay_global     a full replay by the real processor, ordering: global
//	kreplay_code       the same by a Go projector with pipelined handlers (package processor/projector)
//	kreplay_partition  the same with ordering: partition
//	kreplay_fold       the same projection as a set-based fold (one pre-aggregated upsert per batch)
//	promotion          the view swap under 8 readers, without and with a long reader
//	live_latency       produce-to-applied latency of a live version with max_lateness 0s and 1s
//
// Kafka is franz-go's kfake, in this process. The kreplay replays run in a child process (this
// binary re-executed with -child serve) so that their peak RSS is kreplay's own and not the
// in-memory broker's. Every replayed state is compared with the balances the generator implies;
// a scenario that is not exact makes the run exit non-zero.
//
// With -growth N it then extends the topic to N events and runs ceiling_batch, ceiling_set,
// kreplay_global and kreplay_fold again over all of them, to compare the cost of an event at
// the two sizes.
//
// Run it with `make bench` (EVENTS=N, GROWTH=N) or `go run ./bench -events N`; docs/PERFORMANCE.md
// explains the method.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// The workload.
const (
	bankTopic      = "bank.accounts"
	promoTopic     = "bank.promo"
	bankPartitions = 8
	bankAccounts   = 10000
	chunkSize      = 50000 // records generated and produced at a time
	batchSize      = 1000  // statements per transaction in ceiling_batch
	promoReaders   = 8
)

// The scenarios, in the order they run.
var scenarioNames = []string{"naive", "ceiling_batch", "ceiling_batch_parallel", "ceiling_set", "ceiling_consume", "kreplay_global", "kreplay_code", "kreplay_partition", "kreplay_fold", "promotion", "live_latency"}

type options struct {
	events      int
	naiveSample int
	batchEvents int
	promoEvents int
	foldBatch   int
	growth      int // > events: run growthScenarios again at this size (growth.go)
	out         string
	skip        map[string]bool
	cpuprofile  string
	profileAll  bool // -profile: every kreplay child writes bench/<scenario>.prof
	keep        bool
	dbURL       string
	seed        uint64
	timeout     time.Duration
	verbose     bool
}

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		o       options
		skip    string
		profile bool
		child   string
		config  string
	)
	defURL := os.Getenv("KREPLAY_TEST_DATABASE_URL")
	if defURL == "" {
		defURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	fs.IntVar(&o.events, "events", 1000000, "events in the workload")
	fs.IntVar(&o.naiveSample, "naive-sample", 50000, "events applied by the naive scenario (one autocommit statement each)")
	fs.IntVar(&o.batchEvents, "batch-events", 0, "events applied by ceiling_batch (0: all of -events)")
	fs.IntVar(&o.promoEvents, "promo-events", 20000, "events of the projection the promotion scenario swaps")
	fs.IntVar(&o.foldBatch, "fold-batch", 40000, "batch_size of the kreplay_fold scenario")
	fs.IntVar(&o.growth, "growth", 0, "also run ceiling_batch, ceiling_set, kreplay_global and kreplay_fold over this many events, and compare their cost per event with -events' (0: off)")
	fs.StringVar(&o.out, "out", "bench/results.json", "where to write the results")
	fs.StringVar(&skip, "skip", "", "comma-separated scenarios to skip ("+strings.Join(scenarioNames, ", ")+")")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the kreplay_global child's replay to this file")
	fs.BoolVar(&profile, "profile", false, "profile the kreplay replays: bench/global.prof (unless -cpuprofile names a file), bench/partition.prof, bench/fold.prof")
	fs.BoolVar(&o.keep, "keep", false, "keep the bench databases (bench_*) instead of dropping them")
	fs.StringVar(&o.dbURL, "database-url", defURL, "PostgreSQL server to use; each scenario creates a database of its own on it")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the workload generator")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "the longest a kreplay replay may take")
	fs.BoolVar(&o.verbose, "v", false, "log kreplay's info messages (warnings only otherwise)")
	// The child mode: this binary re-executed to run the processor, so that its RSS is its own.
	fs.StringVar(&child, "child", "", "internal: run as a child (serve)")
	fs.StringVar(&config, "config", "", "internal: the child's config file")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: go run ./bench [flags]   (docs/PERFORMANCE.md explains the scenarios)")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == "child" || f.Name == "config" {
				return
			}
			fmt.Fprintf(w, "  -%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
		})
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if child != "" {
		return runChild(child, config, o.cpuprofile, o.verbose)
	}
	o.profileAll = profile
	if profile && o.cpuprofile == "" {
		o.cpuprofile = "bench/global.prof"
	}
	o.skip = map[string]bool{}
	for s := range strings.SplitSeq(skip, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		known := false
		for _, n := range scenarioNames {
			known = known || n == s
		}
		if !known {
			fmt.Fprintf(os.Stderr, "bench: -skip %q: unknown scenario (known: %s)\n", s, strings.Join(scenarioNames, ", "))
			return 2
		}
		o.skip[s] = true
	}
	if o.growth < 0 {
		fmt.Fprintln(os.Stderr, "bench: -growth must be 0 (off) or more than -events")
		return 2
	}
	if o.growth != 0 && o.growth <= o.events {
		progress("-growth %d is not more than -events %d: the growth mode is off", o.growth, o.events)
		o.growth = 0
	}
	if o.events < 1 || o.naiveSample < 0 || o.batchEvents < 0 || o.promoEvents < 1 {
		fmt.Fprintln(os.Stderr, "bench: -events and -promo-events must be positive, -naive-sample and -batch-events not negative")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runBench(ctx, o)
	if res != nil {
		printTable(os.Stdout, res)
		if werr := writeResults(o.out, res); werr != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", werr)
			return 1
		}
		fmt.Printf("\nresults written to %s\n", o.out)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	if bad := res.notExact(); len(bad) > 0 {
		fmt.Fprintf(os.Stderr, "bench: NOT EXACT: %s — a benchmark of a wrong result is worthless\n", strings.Join(bad, ", "))
		return 1
	}
	if failed := res.failed(); len(failed) > 0 {
		fmt.Fprintf(os.Stderr, "bench: failed: %s\n", strings.Join(failed, ", "))
		return 1
	}
	return 0
}

// logger is kreplay's logger: warnings (and info with -v) to stderr.
func logger(verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// progress prints what the bench is doing to stderr, so that stdout holds only the results.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// machine describes where the figures come from.
type machine struct {
	NumCPU          int    `json:"num_cpu"`
	GOMAXPROCS      int    `json:"gomaxprocs"`
	GoVersion       string `json:"go_version"`
	GOOS            string `json:"goos"`
	GOARCH          string `json:"goarch"`
	PostgresVersion string `json:"postgres_version"`
	MemTotalMiB     int64  `json:"mem_total_mib"`
}

func machineInfo(pgVersion string) machine {
	m := machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
		GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, PostgresVersion: pgVersion}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		b, _ := io.ReadAll(io.LimitReader(f, 4096))
		_ = f.Close()
		m.MemTotalMiB = procKiB(string(b), "MemTotal:") / 1024
	}
	return m
}
