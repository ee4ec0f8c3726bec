package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/topology"
)

// The reactor process of TestReactorsFireOncePerLiveEventAcrossSIGKILL is this test binary run
// again with these variables set (see TestMain).
const (
	childEnv        = "KREPLAY_TEST_REACTOR_CHILD" // the code version the child registers as current
	childBrokersEnv = "KREPLAY_TEST_REACTOR_BROKERS"
	childDBEnv      = "KREPLAY_TEST_REACTOR_DATABASE"
)

// reactorChild is a program of a user's own: kreplay with the bank projector (its current code
// version from the environment, version 1 kept when it is 2) and a reactor whose side effect is
// a row per reaction in public.reacted, written on a connection of its own. It runs until SIGTERM
// (or SIGKILL).
func reactorChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "reactor child:", err)
		return 1
	}
	cfg, err := topology.Parse(fmt.Appendf(nil, "sources:\n  - topic: %s\n    partitions: 4\n", bankTopic))
	if err != nil {
		return fail(err)
	}
	cfg.Kafka.Brokers = strings.Split(os.Getenv(childBrokersEnv), ",")
	cfg.Kafka.SessionTimeout = 3 * time.Second
	cfg.Kafka.RebalanceTimeout = 5 * time.Second
	cfg.Postgres.URL = os.Getenv(childDBEnv)
	cfg.HTTP.Listen = "off"
	cfg.Control.StatusInterval = 200 * time.Millisecond
	cfg.SetDefaults()
	side, err := pgxpool.New(ctx, cfg.Postgres.URL)
	if err != nil {
		return fail(err)
	}
	defer side.Close()
	opts := processor.Options{
		Reactors: []*projector.Reactor{{Name: "audit", Projection: "balances",
			React: func(ctx context.Context, ev *projector.Event) error {
				_, err := side.Exec(ctx, "INSERT INTO public.reacted (event_id) VALUES ($1)", ev.ID)
				return err
			}}},
	}
	if os.Getenv(childEnv) == "2" {
		opts.Projectors = []*projector.Projector{bankProjector("2", false)}
		opts.PreviousProjectors = []*projector.Projector{bankProjector("1", false)}
	} else {
		opts.Projectors = []*projector.Projector{bankProjector("1", false)}
	}
	if err := processor.New(cfg, opts).Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// A reactor, in a real process SIGKILLed again and again while events arrive, while a changed
// projector replays and once it is promoted, reacts to every live event at least once, and to each
// exactly once after deduplication by event id; never to an event of the history (the events
// before the first version bootstrapped), which the first version and the replay both applied.
// (A reaction whose position was not recorded when the process died is repeated: at most one
// move's worth of events per kill.) What it counts: the rows the reactor inserted, per event id.
func TestReactorsFireOncePerLiveEventAcrossSIGKILL(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 4})
	_, err := b.db.Exec(context.Background(), "CREATE TABLE public.reacted (n bigserial PRIMARY KEY, event_id text NOT NULL)")
	require.NoError(t, err)
	bank := bankgen.New(bankTopic, 4, 200, 41)
	var mu sync.Mutex
	var history, live []string
	produce := func(n int, into *[]string) {
		mu.Lock()
		recs := bank.Events(n)
		mu.Unlock()
		b.kafka.Produce(recs...)
		mu.Lock()
		*into = append(*into, eventIDs(t, recs)...)
		mu.Unlock()
	}
	produce(3000, &history)

	var child *exec.Cmd
	start := func(version string) {
		t.Helper()
		child = exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), childEnv+"="+version, childBrokersEnv+"="+strings.Join(b.kafka.Addrs, ","), childDBEnv+"="+b.dbURL)
		child.Stdout, child.Stderr = testWriter{t}, testWriter{t}
		child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		require.NoError(t, child.Start())
	}
	kill := func() {
		t.Helper()
		require.NoError(t, child.Process.Kill())
		_ = child.Wait() // killed
	}
	t.Cleanup(func() {
		if child.ProcessState == nil {
			kill()
		}
	})
	cfg := b.codeConfig(4)
	client, err := control.NewClient(cfg, nil)
	require.NoError(t, err)
	defer client.Close()
	command := func(cmd control.Command) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := client.Send(ctx, cmd)
		require.NoError(t, err)
		require.True(t, out.OK, "%s: %s", cmd.Command, out.Error)
	}

	// The first run bootstraps balances_v1 (the history is not reacted to); live events start
	// once it has.
	start("1")
	eventually(t, 60*time.Second, func() bool {
		var n int64
		err := b.db.QueryRow(context.Background(), "SELECT count(*) FROM kreplay.reactions WHERE projection = 'balances'").Scan(&n)
		return err == nil && n > 0 // an error: the child has not migrated the catalog yet
	}, "the reactions did not start")
	stopProducing := make(chan struct{})
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		for {
			select {
			case <-stopProducing:
				return
			case <-time.After(30 * time.Millisecond):
				produce(20, &live)
			}
		}
	}()
	reacted := func() int64 { return b.scalar("SELECT count(DISTINCT event_id) FROM public.reacted") }
	rnd := rand.New(rand.NewPCG(5, 6))
	kills := 0
	run := func(version string, then func()) {
		t.Helper()
		if child == nil || child.ProcessState != nil {
			start(version)
		}
		before := reacted()
		eventually(t, 60*time.Second, func() bool { return reacted() > before }, "run %d reacted to nothing", kills)
		if then != nil {
			then()
		}
		time.Sleep(time.Duration(200+rnd.IntN(600)) * time.Millisecond)
		kill()
		kills++
	}
	run("1", nil)
	run("1", nil)
	// The next binary has version 2 of the projector: replay it, killed during the replay.
	run("2", func() {
		command(control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	})
	run("2", func() {
		eventually(t, 60*time.Second, func() bool {
			return b.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2' AND state = 'tailing'") == 1
		},
			"balances_v2 did not catch up")
		command(control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"wait": "30s"}`)})
	})
	run("2", nil)
	close(stopProducing)
	<-producing

	// The last run drains: every live event reacted to.
	start("2")
	mu.Lock()
	want := len(live)
	mu.Unlock()
	eventually(t, 90*time.Second, func() bool { return reacted() == int64(want) }, "%d of %d live events reacted to", reacted(), want)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v2", bankTopic) }, "balances_v2 did not catch up")
	require.NoError(t, child.Process.Signal(syscall.SIGTERM))
	require.NoError(t, child.Wait(), "SIGTERM stops it cleanly")

	rows, err := b.db.Query(context.Background(), "SELECT event_id, count(*) FROM public.reacted GROUP BY event_id")
	require.NoError(t, err)
	counts := map[string]int{}
	var id string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { counts[id] = n; return nil })
	require.NoError(t, err)
	dups := 0
	for _, id := range history {
		require.NotContains(t, counts, id, "an event of the history was reacted to")
	}
	for _, id := range live {
		require.Contains(t, counts, id, "a live event was not reacted to")
		dups += counts[id] - 1
	}
	require.Len(t, counts, len(live), "exactly the live events, once each after deduplication")
	t.Logf("%d live events reacted to across %d kills; %d reactions repeated after a kill", len(live), kills, dups)
	require.LessOrEqual(t, dups, kills*256, "at most one move's worth of repeats per kill")
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, bank.Counts(), b.counts("public"), "balances_v2, the version 2 of the code, is live")
}
