// Command bank is kreplay used as a library: a program of its own that projects bank accounts
// with Go code (package processor/projector), rolls a changed handler out as a replay with zero
// downtime, and runs a reactor once per live event, never for a replay.
//
// Run it with no arguments on a machine with the local PostgreSQL (make postgres):
//
//	go run ./examples/bank
//
// It uses an embedded Kafka broker (in memory), creates the database kreplay_example_bank on the
// server of -database-url (else KREPLAY_DATABASE_URL, else DATABASE_URL, else the local default),
// dropping it first, and leaves it for you to look at. It tells the story, checks its own results
// and exits 0, or 1 when a check fails.
//
// The operators' commands (create, verify, promote, remove) go through the control topic, as the
// kreplay CLI sends them: kreplay -c kreplay.yaml create balances_v2 --projection balances --start
// does the same against this program.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/embedded"
	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

const topic = "bank.accounts"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bank:", err)
		os.Exit(1)
	}
}

type options struct {
	serverURL string
	database  string
	history   int
	live      int
	accounts  int
	verbose   bool
}

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	o := options{serverURL: os.Getenv("KREPLAY_DATABASE_URL")}
	if o.serverURL == "" {
		o.serverURL = os.Getenv("DATABASE_URL")
	}
	if o.serverURL == "" {
		o.serverURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	fs := flag.NewFlagSet("bank", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&o.serverURL, "database-url", o.serverURL, "the PostgreSQL server (the example creates its database there)")
	fs.StringVar(&o.database, "database", "kreplay_example_bank", "the database to create (dropped first if it exists)")
	fs.IntVar(&o.history, "history", 20000, "events in the history")
	fs.IntVar(&o.live, "live", 1000, "live events per step")
	fs.IntVar(&o.accounts, "accounts", 500, "bank accounts")
	fs.BoolVar(&o.verbose, "v", false, "log kreplay's warnings and errors (to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.Level(100) // nothing: the story says what happens
	if o.verbose {
		level = slog.LevelWarn
	}
	s := &story{o: o, out: out, log: slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level})),
		notes: notifier{seen: map[string]int{}}}
	defer s.close()
	if err := s.tell(ctx); err != nil {
		return err
	}
	return s.result()
}

// result is nil when every check passed.
func (s *story) result() error {
	if len(s.failed) > 0 {
		return fmt.Errorf("%d checks failed: %s", len(s.failed), strings.Join(s.failed, "; "))
	}
	return nil
}

type story struct {
	o      options
	out    io.Writer
	log    *slog.Logger
	dbURL  string
	db     *pgx.Conn
	broker *embedded.Broker
	cl     *kgo.Client
	bank   *bank
	notes  notifier
	serve  *serving
	failed []string
}

func (s *story) say(format string, args ...any) { fmt.Fprintf(s.out, format+"\n", args...) }

// check says whether a result is what it must be, and remembers a failure.
func (s *story) check(ok bool, what string, args ...any) {
	mark := "ok"
	if !ok {
		mark = "FAILED"
		s.failed = append(s.failed, fmt.Sprintf(what, args...))
	}
	s.say("   %-6s %s", mark, fmt.Sprintf(what, args...))
}

func (s *story) tell(ctx context.Context) error {
	s.say("kreplay as a library: bank balances projected by Go code, rebuilt with zero downtime\n")
	if err := s.createDatabase(ctx); err != nil {
		return err
	}
	cfg, err := s.config()
	if err != nil {
		return err
	}
	// The broker lives outside serve, so that serve can be restarted as the next binary.
	if s.broker, err = embedded.Start(cfg, s.log); err != nil {
		return err
	}
	cfg.Kafka.Brokers = s.broker.Addrs
	if s.cl, err = kgo.NewClient(kgo.SeedBrokers(s.broker.Addrs...), kgo.ProducerLinger(0)); err != nil {
		return err
	}
	s.bank = newBank(s.cl, s.o.accounts)
	u, _ := url.Parse(s.dbURL)
	s.say("  PostgreSQL  %s (database %s, created for the example)", u.Redacted(), s.o.database)
	s.say("  Kafka       embedded broker at %s (in memory)\n", s.broker.Addrs[0])

	s.say("1. A history of %d bank events on %s (4 partitions, %d accounts).", s.o.history, topic, s.o.accounts)
	history, err := s.bank.produce(ctx, s.o.history)
	if err != nil {
		return err
	}

	s.say("\n2. Binary 1 serves projector balances version 1 (pipelined Go handlers) and the reactor notifier.")
	s.say("   balances has no version yet: balances_v1 is created, live at once, and replays the history.")
	start := time.Now()
	if err := s.start(ctx, cfg, processor.Options{Projectors: []*projector.Projector{balancesV1()}}); err != nil {
		return err
	}
	if err := s.caughtUp(ctx, "balances_v1"); err != nil {
		return err
	}
	s.say("   caught up in %s.", time.Since(start).Round(10*time.Millisecond))
	s.check(len(s.notes.reactions()) == 0, "notifier reacted to %d events: the history is not live", len(s.notes.reactions()))

	s.say("\n3. %d live events arrive.", s.o.live)
	live, err := s.bank.produce(ctx, s.o.live)
	if err != nil {
		return err
	}
	if err := s.reactedTo(ctx, live); err != nil {
		return err
	}
	s.check(s.exactlyOnce(live), "notifier reacted to each of the %d live events once", len(live))

	s.say("\n4. The handler changes: version 2 also counts each account's events and keeps its largest deposit.")
	s.say("   Binary 2 registers version 2 (what new versions run) and version 1 (balances_v1 runs it until removed).")
	s.stop()
	two := processor.Options{Projectors: []*projector.Projector{balancesV2()}, PreviousProjectors: []*projector.Projector{balancesV1()}}
	if err := s.start(ctx, cfg, two); err != nil {
		return err
	}
	st, err := s.serve.p.Manager().VersionStatus(ctx, "balances_v1")
	if err != nil {
		return err
	}
	s.check(st.Drift, "status balances_v1: drift=%v (it runs version 1, the binary's projector is version 2)", st.Drift)

	client, err := control.NewClient(cfg, nil)
	if err != nil {
		return err
	}
	defer client.Close()
	s.say("\n5. kreplay create balances_v2 --projection balances --start   (while live events keep arriving)")
	stopLive := s.keepProducing(ctx)
	start = time.Now()
	if _, err := s.command(ctx, client, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances",
		Options: json.RawMessage(`{"start": true}`)}); err != nil {
		stopLive()
		return err
	}
	err = s.caughtUp(ctx, "balances_v2")
	during := stopLive()
	if err != nil {
		return err
	}
	_, _, _, total := s.bank.implied()
	s.say("   balances_v2 replayed all %d events in %s and is tailing; the live view is still balances_v1's.", total, time.Since(start).Round(10*time.Millisecond))
	live = append(live, during...)
	if err := s.reactedTo(ctx, live); err != nil {
		return err
	}
	s.check(s.exactlyOnce(live), "notifier reacted to the %d events that arrived meanwhile, once each, and to none that balances_v2 replayed", len(during))

	s.say("\n6. kreplay verify balances_v2   (both versions held at the same offsets, compared in one snapshot)")
	outcome, err := s.command(ctx, client, control.Command{Command: "verify", Replay: "balances_v2"})
	if err != nil {
		return err
	}
	var rep control.VerifyReport
	if err := json.Unmarshal(outcome.Result, &rep); err != nil {
		return err
	}
	for _, r := range rep.Results {
		s.say("          %-9s %-55s %s", r.Kind, r.Name, map[bool]string{true: "equal", false: "DIFFERENT"}[r.Equal])
	}
	s.check(rep.Passed, "verify passed")

	s.say("\n7. kreplay promote balances_v2 --verified   (the views repointed in one transaction)")
	outcome, err = s.command(ctx, client, control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"verified": true, "wait": "30s"}`)})
	if err != nil {
		return err
	}
	var sw control.SwapReport
	_ = json.Unmarshal(outcome.Result, &sw)
	s.say("   %s -> %s live (swap %.1fms)", sw.From, sw.To, sw.SwapDurationMS)
	more, err := s.bank.produce(ctx, s.o.live)
	if err != nil {
		return err
	}
	live = append(live, more...)
	if err := s.caughtUp(ctx, "balances_v2"); err != nil {
		return err
	}
	if err := s.reactedTo(ctx, live); err != nil {
		return err
	}
	s.check(s.exactlyOnce(live), "notifier went on from balances_v2's position: %d more live events, once each", len(more))

	s.say("\n8. kreplay remove balances_v1   (binary 3 may drop version 1's projector)")
	if _, err := s.command(ctx, client, control.Command{Command: "remove", Replay: "balances_v1"}); err != nil {
		return err
	}

	s.say("\nChecks:")
	balances, counts, largest, total := s.bank.implied()
	s.check(maps.Equal(s.column(ctx, "total"), balances), "public.balances: the balance of every account (%d) matches the events", len(balances))
	s.check(maps.Equal(s.column(ctx, "events"), counts), "public.balances.events (version 2's column) matches the events")
	s.check(maps.Equal(s.column(ctx, "largest_deposit"), largest), "public.balances.largest_deposit matches the events")
	reacted := s.notes.reactions()
	historyReacted := 0
	for _, id := range history {
		historyReacted += reacted[id]
	}
	s.check(historyReacted == 0 && s.exactlyOnce(live), "notifier: %d live events reacted to, each once; none of the %d history events, though balances_v1 and balances_v2 both applied them",
		len(live), len(history))
	s.say("\n%d events; the database %s is left for you to look at:", total, s.o.database)
	s.say("  psql -d %s -c 'SELECT * FROM public.balances ORDER BY account_id LIMIT 5'", s.o.database)
	return nil
}

// exactlyOnce reports whether the notifier reacted to exactly these events, once each.
func (s *story) exactlyOnce(ids []string) bool {
	got := s.notes.reactions()
	if len(got) != len(ids) {
		return false
	}
	for _, id := range ids {
		if got[id] != 1 {
			return false
		}
	}
	return true
}

// reactedTo waits until the notifier has reacted to every one of ids (and a little longer, for a
// repeat to show).
func (s *story) reactedTo(ctx context.Context, ids []string) error {
	err := s.waitFor(ctx, "the notifier to react to the live events", func() (bool, error) {
		got := s.notes.reactions()
		for _, id := range ids {
			if got[id] == 0 {
				return false, nil
			}
		}
		return true, nil
	})
	time.Sleep(300 * time.Millisecond)
	return err
}

func (s *story) createDatabase(ctx context.Context) error {
	if err := topology.ValidateIdentifier(s.o.database); err != nil {
		return fmt.Errorf("-database: %w", err)
	}
	admin, err := pgx.Connect(ctx, s.o.serverURL)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w (run `make postgres`, or pass -database-url)", s.o.serverURL, err)
	}
	defer admin.Close(ctx)
	// An earlier run's database goes with its catalog's roles (roles are the server's).
	if err := store.DropDatabase(ctx, s.o.serverURL, s.o.database); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+s.o.database); err != nil {
		return err
	}
	u, err := url.Parse(s.o.serverURL)
	if err != nil {
		return err
	}
	u.Path = "/" + s.o.database
	s.dbURL = u.String()
	s.db, err = pgx.Connect(ctx, s.dbURL)
	return err
}

// config is the program's kreplay config: the file part (kafka, postgres, sources), which could
// as well come from topology.ReadFile("kreplay.yaml", os.Getenv). The projection is Go code.
func (s *story) config() (*topology.Config, error) {
	cfg, err := topology.Parse(fmt.Appendf(nil, `kafka:
  brokers: [embedded]
  embedded_listen: "127.0.0.1:0"
  session_timeout: 6s
postgres:
  url: %q
http:
  listen: "off"
control:
  status_interval: 300ms
sources:
  - topic: %s
    partitions: 4
`, s.dbURL, topic))
	if err != nil {
		return nil, err
	}
	cfg.SetDefaults()
	return cfg, nil
}

// serving is a running processor: `kreplay serve` in this program.
type serving struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
}

func (s *story) start(ctx context.Context, cfg *topology.Config, opts processor.Options) error {
	opts.Logger = s.log
	opts.Reactors = []*projector.Reactor{s.notes.reactor()}
	p := processor.New(cfg, opts)
	sctx, cancel := context.WithCancel(ctx)
	r := &serving{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(sctx) }()
	select {
	case <-p.Started():
	case err := <-r.done:
		cancel()
		return fmt.Errorf("serve: %w", err)
	}
	s.serve = r
	return nil
}

func (s *story) stop() {
	if s.serve == nil {
		return
	}
	s.serve.cancel()
	if err := <-s.serve.done; err != nil {
		s.say("   (serve stopped with: %v)", err)
	}
	s.serve = nil
}

func (s *story) close() {
	s.stop()
	if s.cl != nil {
		s.cl.Close()
	}
	if s.broker != nil {
		s.broker.Close()
	}
	if s.db != nil {
		_ = s.db.Close(context.Background())
	}
}

// keepProducing produces 10 events every 50ms until the returned stop, which returns their ids.
func (s *story) keepProducing(ctx context.Context) (stop func() []string) {
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var out []string
	go func() {
		defer close(done)
		for {
			select {
			case <-pctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			got, err := s.bank.produce(context.WithoutCancel(pctx), 10)
			if err != nil {
				s.log.Error("produce", "err", err)
				return
			}
			out = append(out, got...)
		}
	}()
	return func() []string {
		cancel()
		<-done
		return out
	}
}

// caughtUp waits until a version has caught up as promote means it (see Manager.Settled): a
// replay until it is tailing too.
func (s *story) caughtUp(ctx context.Context, key string) error {
	return s.waitFor(ctx, key+" to catch up", func() (bool, error) {
		st, settled, err := s.serve.p.Manager().Settled(ctx, key)
		if err != nil {
			return false, err
		}
		if st.Error != "" {
			return false, fmt.Errorf("%s: %s", key, st.Error)
		}
		return settled, nil
	})
}

func (s *story) waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited 2 minutes for %s", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// command publishes a command on the control topic, as the CLI does, and waits for its outcome.
func (s *story) command(ctx context.Context, c *control.Client, cmd control.Command) (*control.Outcome, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := c.Send(cctx, cmd)
	if err != nil {
		return nil, err
	}
	if !out.OK {
		return out, fmt.Errorf("%s %s: %s", cmd.Command, cmd.Replay, out.Error)
	}
	return out, nil
}

// column reads a column of the live view by account (nil when it cannot).
func (s *story) column(ctx context.Context, column string) map[string]int64 {
	rows, err := s.db.Query(ctx, "SELECT account_id, "+pgx.Identifier{column}.Sanitize()+" FROM public.balances")
	if err != nil {
		s.say("   read public.balances.%s: %v", column, err)
		return nil
	}
	out := map[string]int64{}
	var k string
	var v int64
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { out[k] = v; return nil }); err != nil {
		s.say("   read public.balances.%s: %v", column, err)
		return nil
	}
	return out
}
