package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/embedded"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// The demo tells the whole story on an embedded broker and the local PostgreSQL, through the
// same paths an operator uses: serve, commands on the control topic, statuses, the live view.

type demoOptions struct {
	ServerURL string // a URL of the PostgreSQL server; the demo creates Database on it
	Database  string
	Events    int // the history
	Accounts  int
	Rate      int // events per second arriving while the replay runs
	Readers   int // concurrent readers of the live view during the swaps
	Out       io.Writer
	Tty       bool
	Logger    *slog.Logger
}

type demoSummary struct {
	Events        int64
	V1Seconds     float64
	V2Seconds     float64
	Reads, Errors int64
	P99, Max      time.Duration
	Swaps         []control.SwapReport
	Verified      bool
	Exact         bool
}

func (a *app) demoCommand() *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The whole flow on an embedded broker and the local PostgreSQL, narrated",
		Long: `demo runs kreplay's whole story in about a minute: a bank-account history on an
embedded (in-process) Kafka broker, serve bootstrapping the live version, a changed
definition replayed as a new version while events keep arriving, verify, promote
while readers query the live view, rollback, promote again, remove the old version.
It creates (and leaves, for you to look at) the database --database on the
PostgreSQL server of --database-url, else KREPLAY_DATABASE_URL, else
DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres (it connects to
that URL's database to create it; it does not read the config file).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.ServerURL = a.databaseURL
			if o.ServerURL == "" {
				o.ServerURL = a.getenv(cmd)("KREPLAY_DATABASE_URL")
			}
			if o.ServerURL == "" {
				o.ServerURL = a.getenv(cmd)("DATABASE_URL")
			}
			if o.ServerURL == "" {
				o.ServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
			}
			o.Out, o.Tty = cmd.OutOrStdout(), isTerminal(cmd.OutOrStdout())
			// The narration explains what serve would warn about (the drift of step 3); errors still show.
			o.Logger = newLogger(cmd.ErrOrStderr(), max(a.level, slog.LevelError), a.logFormat)
			_, err := runDemo(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Database, "database", "kreplay_demo", "database the demo creates (dropped first if it exists)")
	f.IntVar(&o.Events, "events", 100000, "events in the history")
	f.IntVar(&o.Accounts, "accounts", 2000, "bank accounts")
	f.IntVar(&o.Rate, "rate", 500, "events per second arriving while the replay runs")
	// Readers query in a tight loop: more of them than twice the CPUs measure the scheduler (on 2
	// CPUs, 8 readers saw 13-900ms maxima; 4 stayed under 10ms), not the swap.
	f.IntVar(&o.Readers, "readers", min(8, 2*runtime.NumCPU()), "concurrent readers of the live view during the swaps; the default is twice the CPUs, at most 8")
	return cmd
}

func runDemo(ctx context.Context, o demoOptions) (*demoSummary, error) {
	d := &demo{o: o, sum: &demoSummary{}}
	err := d.run(ctx)
	d.stopAll()
	if err != nil {
		d.say("\nThe demo stopped: %v", err)
		return d.sum, err
	}
	return d.sum, nil
}

type demo struct {
	o       demoOptions
	sum     *demoSummary
	dbURL   string
	db      *pgx.Conn
	broker  *embedded.Broker
	cl      *kgo.Client
	bank    *bankgen.Bank
	bankMu  sync.Mutex
	serve   *running
	stopGen context.CancelFunc
	genDone chan struct{}
}

type running struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
}

const demoTopic = "bank.accounts"

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.o.Out, format+"\n", args...) }

func (d *demo) run(ctx context.Context) error {
	o := d.o
	d.say("kreplay demo: rebuild a read model from Kafka with zero downtime\n")
	if err := d.createDatabase(ctx); err != nil {
		return err
	}
	cfg, err := d.config(false)
	if err != nil {
		return err
	}
	if d.broker, err = embedded.Start(cfg, o.Logger); err != nil {
		return err
	}
	cfg.Kafka.Brokers = d.broker.Addrs // every serve of the demo uses this broker
	d.say("  PostgreSQL  %s (database %s, created for the demo)", redactURL(d.dbURL), o.Database)
	d.say("  Kafka       embedded broker at %s (in memory)\n", d.broker.Addrs[0])
	if d.cl, err = kgo.NewClient(kgo.SeedBrokers(d.broker.Addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0)); err != nil {
		return err
	}

	d.say("1. A bank-account history: %s events on %s (8 partitions, %s accounts).", formatCount(int64(o.Events)), demoTopic, formatCount(int64(o.Accounts)))
	d.bank = bankgen.New(demoTopic, 8, o.Accounts, 2026)
	for left := o.Events; left > 0; left -= 20000 {
		if err := d.produce(ctx, min(left, 20000)); err != nil {
			return err
		}
	}

	d.say("\n2. kreplay serve: projection balances has no version yet, so balances_v1 is created,")
	d.say("   live at once, and replays the history from offset zero.")
	start := time.Now()
	if err := d.startServe(ctx, cfg); err != nil {
		return err
	}
	if err := d.waitCaughtUp(ctx, "balances_v1", nil); err != nil {
		return err
	}
	d.sum.V1Seconds = time.Since(start).Seconds()
	d.say("   caught up in %s (%s events/s)", formatDuration(time.Since(start)), formatCount(int64(float64(o.Events)/d.sum.V1Seconds)))
	if err := d.checkLive(ctx, false); err != nil {
		return err
	}

	d.say("\n3. The projection changes: balances gains an events column (events per account).")
	d.say("   serve restarts on the new config; balances_v1 keeps running its own snapshot (drift),")
	d.say("   and new events keep arriving (%d/s).", o.Rate)
	d.stopServe()
	if cfg, err = d.config(true); err != nil {
		return err
	}
	if err := d.startServe(ctx, cfg); err != nil {
		return err
	}
	if st, err := d.serve.p.Manager().VersionStatus(ctx, "balances_v1"); err == nil && st.Drift {
		d.say("   status balances_v1: drift=true (config %s..., live snapshot %s...)", shortHash(mustHash(cfg)), shortHash(st.DefinitionHash))
	}
	d.startGenerator(ctx)
	client, err := control.NewClient(cfg, nil)
	if err != nil {
		return err
	}
	defer client.Close()

	d.say("\n4. kreplay create balances_v2 --projection balances --start")
	start = time.Now()
	if _, err := d.command(ctx, client, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances",
		Options: json.RawMessage(`{"start": true}`)}); err != nil {
		return err
	}
	if err := d.waitCaughtUp(ctx, "balances_v2", d.progress); err != nil {
		return err
	}
	d.sum.V2Seconds = time.Since(start).Seconds()
	d.say("   balances_v2 is tailing after %s; the live view is still balances_v1's", formatDuration(time.Since(start)))

	d.say("\n5. kreplay verify balances_v2   (both held at the same offsets, compared in one snapshot)")
	out, err := d.command(ctx, client, control.Command{Command: "verify", Replay: "balances_v2"})
	if err != nil {
		return err
	}
	var rep control.VerifyReport
	if err := json.Unmarshal(out.Result, &rep); err == nil {
		for _, r := range rep.Results {
			d.say("   %-9s %-45s %s", r.Kind, truncate(r.Name, 45), map[bool]string{true: "equal", false: "DIFFERENT"}[r.Equal])
		}
		for _, s := range rep.Skipped {
			d.say("   not compared: %s", s)
		}
	}
	d.sum.Verified = rep.Passed
	d.say("   PASSED")

	d.say("\n6. Promote while %d readers query public.balances in a tight loop:", o.Readers)
	stopReaders := d.startReaders(ctx)
	time.Sleep(300 * time.Millisecond)
	steps := []struct {
		say string
		cmd control.Command
	}{
		{"kreplay promote balances_v2 --wait 30s", control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"wait": "30s"}`)}},
		{"kreplay rollback balances", control.Command{Command: "rollback", Projection: "balances"}},
		{"kreplay promote balances_v2 --wait 30s", control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"wait": "30s"}`)}},
	}
	for _, s := range steps {
		out, err := d.command(ctx, client, s.cmd)
		if err != nil {
			stopReaders()
			return err
		}
		var sw control.SwapReport
		_ = json.Unmarshal(out.Result, &sw)
		d.sum.Swaps = append(d.sum.Swaps, sw)
		shape := "without"
		if d.viewHasEvents(ctx) {
			shape = "with"
		}
		d.say("   %-40s -> %s live, view %s the events column (swap %.1fms, %s)", s.say, sw.To, shape,
			sw.SwapDurationMS, plural(sw.Attempts, "attempt", "attempts"))
		for _, c := range sw.ShapeChanges {
			d.say("   %-40s    view shape: %s", "", c)
		}
		time.Sleep(300 * time.Millisecond)
	}
	stopReaders()
	d.say("   readers: %s reads, %d errors, latency p99 %s, max %s", formatCount(d.sum.Reads), d.sum.Errors,
		d.sum.P99.Round(10*time.Microsecond), d.sum.Max.Round(10*time.Microsecond))

	d.say("\n7. kreplay remove balances_v1   (the retired version: its schema and consumer group go)")
	if _, err := d.command(ctx, client, control.Command{Command: "remove", Replay: "balances_v1"}); err != nil {
		return err
	}
	var schemas int
	if err := d.db.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'balances_v1'").Scan(&schemas); err != nil {
		return err
	}
	d.say("   schema balances_v1 dropped: %v", schemas == 0)

	d.stopGenerator()
	if err := d.waitCaughtUp(ctx, "balances_v2", nil); err != nil {
		return err
	}
	if err := d.checkLive(ctx, true); err != nil {
		return err
	}
	d.sum.Events = int64(d.bank.Total())
	d.say("\nSummary: %s events; balances_v1 replayed in %.1fs; balances_v2 replayed in %.1fs while events arrived;",
		formatCount(d.sum.Events), d.sum.V1Seconds, d.sum.V2Seconds)
	d.say("verify passed; %d live-version switches with %d reader errors in %s reads; the live view matches the events exactly.",
		len(d.sum.Swaps), d.sum.Errors, formatCount(d.sum.Reads))
	d.say("The database %s is left for you to look at (psql -d %s -c 'SELECT * FROM public.balances LIMIT 5').", d.o.Database, d.o.Database)
	if d.sum.Errors > 0 || !d.sum.Exact || !d.sum.Verified {
		return errors.New("the demo's checks failed (see above)")
	}
	return nil
}

// createDatabase drops and creates the demo's database on the server.
func (d *demo) createDatabase(ctx context.Context) error {
	if err := topology.ValidateIdentifier(d.o.Database); err != nil {
		return fmt.Errorf("--database: %w", err)
	}
	admin, err := pgx.Connect(ctx, d.o.ServerURL)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w (run `make postgres`, or set KREPLAY_DATABASE_URL)", redactURL(d.o.ServerURL), err)
	}
	defer admin.Close(ctx)
	// The previous demo's database goes with its catalog's roles (roles are the server's).
	if err := store.DropDatabase(ctx, d.o.ServerURL, d.o.Database); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+d.o.Database); err != nil {
		return fmt.Errorf("create database %s: %w", d.o.Database, err)
	}
	u, err := url.Parse(d.o.ServerURL)
	if err != nil {
		return err
	}
	u.Path = "/" + d.o.Database
	d.dbURL = u.String()
	d.db, err = pgx.Connect(ctx, d.dbURL)
	return err
}

func (d *demo) config(withCount bool) (*topology.Config, error) {
	yaml := fmt.Sprintf(`kafka:
  brokers: [embedded]
  embedded_listen: "127.0.0.1:0"
  session_timeout: 6s
postgres:
  url: %q
http:
  listen: "127.0.0.1:0"
control:
  status_interval: 300ms
`, d.dbURL) + bankgen.Config(demoTopic, 8, "global", withCount)
	cfg, err := topology.FromYAML([]byte(yaml))
	if err != nil {
		return nil, err
	}
	if d.broker != nil {
		cfg.Kafka.Brokers = d.broker.Addrs
	}
	return cfg, nil
}

func (d *demo) produce(ctx context.Context, n int) error {
	d.bankMu.Lock()
	recs := d.bank.Events(n)
	d.bankMu.Unlock()
	return d.cl.ProduceSync(ctx, recs...).FirstErr()
}

func (d *demo) startServe(ctx context.Context, cfg *topology.Config) error {
	p := processor.New(cfg, processor.Options{Logger: d.o.Logger})
	sctx, cancel := context.WithCancel(ctx)
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(sctx) }()
	select {
	case <-p.Started():
	case err := <-r.done:
		cancel()
		return fmt.Errorf("serve: %w", err)
	}
	d.serve = r
	if addr := p.HTTPAddr(); addr != "" {
		d.say("   (serve's metrics: http://%s/metrics)", addr)
	}
	return nil
}

func (d *demo) stopServe() {
	if d.serve == nil {
		return
	}
	d.serve.cancel()
	if err := <-d.serve.done; err != nil {
		d.say("   (serve stopped with: %v)", err)
	}
	d.serve = nil
}

func (d *demo) stopAll() {
	d.stopGenerator()
	d.stopServe()
	if d.cl != nil {
		d.cl.Close()
	}
	if d.broker != nil {
		d.broker.Close()
	}
	if d.db != nil {
		_ = d.db.Close(context.Background())
	}
}

// startGenerator keeps producing o.Rate events per second until stopGenerator.
func (d *demo) startGenerator(ctx context.Context) {
	gctx, cancel := context.WithCancel(ctx)
	d.stopGen, d.genDone = cancel, make(chan struct{})
	go func() {
		defer close(d.genDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-gctx.Done():
				return
			case <-tick.C:
				_ = d.produce(gctx, max(1, d.o.Rate/10))
			}
		}
	}()
}

func (d *demo) stopGenerator() {
	if d.stopGen != nil {
		d.stopGen()
		<-d.genDone
		d.stopGen = nil
	}
}

// waitCaughtUp waits until a version has caught up as promote means it (Manager.Settled)
// (a replay: once it is tailing), calling show with its status on the way.
func (d *demo) waitCaughtUp(ctx context.Context, key string, show func(control.Status)) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		st, settled, err := d.serve.p.Manager().Settled(ctx, key)
		if err != nil {
			return err
		}
		if show != nil {
			show(*st)
		}
		if st.Error != "" {
			return fmt.Errorf("%s: %s", key, st.Error)
		}
		if settled {
			if show != nil && d.o.Tty {
				fmt.Fprintln(d.o.Out)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not catch up in 5 minutes", key)
}

func (d *demo) progress(st control.Status) {
	if d.o.Tty {
		fmt.Fprintf(d.o.Out, "\r   %s\033[K", renderProgress(st, 24, time.Now(), time.Hour))
		return
	}
	if st.State == "replaying" {
		d.say("   %s", renderProgress(st, 0, time.Now(), time.Hour))
	}
}

// command publishes a command on the control topic, as the CLI does, and waits for its outcome.
func (d *demo) command(ctx context.Context, c *control.Client, cmd control.Command) (*control.Outcome, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := c.Send(cctx, cmd)
	if err != nil {
		return nil, err
	}
	if !out.OK {
		return out, fmt.Errorf("%s %s%s: %s", cmd.Command, cmd.Replay, cmd.Projection, out.Error)
	}
	return out, nil
}

// checkLive compares the live view with the balances the events imply.
func (d *demo) checkLive(ctx context.Context, withCounts bool) error {
	rows, err := d.db.Query(ctx, "SELECT account_id, total FROM public.balances")
	if err != nil {
		return err
	}
	got := map[string]int64{}
	var sum int64
	for rows.Next() {
		var a string
		var v int64
		if err := rows.Scan(&a, &v); err != nil {
			return err
		}
		got[a] = v
		sum += v
	}
	if err := rows.Err(); err != nil {
		return err
	}
	d.bankMu.Lock()
	want := d.bank.Balances()
	counts := d.bank.Counts()
	d.bankMu.Unlock()
	exact := len(got) == len(want)
	for k, v := range want {
		exact = exact && got[k] == v
	}
	if withCounts {
		rows, err := d.db.Query(ctx, "SELECT account_id, events FROM public.balances")
		if err != nil {
			return err
		}
		for rows.Next() {
			var a string
			var n int64
			if err := rows.Scan(&a, &n); err != nil {
				return err
			}
			exact = exact && counts[a] == n
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	d.sum.Exact = exact
	mark := "matches the events exactly"
	if !exact {
		mark = "DOES NOT match the events"
	}
	d.say("   public.balances: %s accounts, total %s: %s", formatCount(int64(len(got))), formatCount(sum), mark)
	if !exact {
		return errors.New("the live view does not match the events")
	}
	return nil
}

func (d *demo) viewHasEvents(ctx context.Context) bool {
	var n int
	err := d.db.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name = 'balances' AND column_name = 'events'`).Scan(&n)
	return err == nil && n > 0
}

// startReaders runs o.Readers readers of the live view until the returned function is called,
// which records their reads, errors and latencies in the summary.
func (d *demo) startReaders(ctx context.Context) func() {
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var reads, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	for range d.o.Readers {
		conn, err := pgx.Connect(ctx, d.dbURL)
		if err != nil {
			errs.Add(1)
			continue
		}
		wg.Go(func() {
			defer conn.Close(context.Background())
			var local []time.Duration
			for rctx.Err() == nil {
				t := time.Now()
				var n, total int64
				err := conn.QueryRow(rctx, "SELECT count(*), coalesce(sum(total), 0) FROM public.balances").Scan(&n, &total)
				if rctx.Err() != nil {
					break
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				reads.Add(1)
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	return func() {
		cancel()
		wg.Wait()
		slices.Sort(lat)
		d.sum.Reads, d.sum.Errors = reads.Load(), errs.Load()
		if len(lat) > 0 {
			d.sum.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
			d.sum.Max = lat[len(lat)-1]
		}
	}
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}

func mustHash(cfg *topology.Config) string {
	def, err := cfg.Definition("balances")
	if err != nil {
		return ""
	}
	return def.Hash()
}

func shortHash(h string) string {
	if len(h) > 19 {
		return h[:19]
	}
	return h
}
