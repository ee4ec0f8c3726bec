package processor_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
)

const spreadProjection = `  - name: spread
    ordering: partition
    workers: 2
    sources: [bank.accounts]
    tables:
      - CREATE TABLE spread_balances (account_id text PRIMARY KEY, total bigint NOT NULL)
    handlers:
      MoneyDeposited: INSERT INTO spread_balances AS b VALUES (@aggregate_id, (@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
      MoneyWithdrawn: INSERT INTO spread_balances AS b VALUES (@aggregate_id, -(@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
`

type instance struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
}

// Three instances with the same config share the work: a global-order version is consumed by
// one member (all its partitions), a partition-order one is spread. Killing the member that owns
// a replay moves it to another; the replay, the live projections and the control plane finish
// with exact values and no duplicates.
func TestInstancesShareTheWorkAndSurviveLosingOne(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 8})
	bank := bankgen.New(topic, 8, 200, 101)
	b.kafka.Produce(bank.Events(30000)...)
	cfg := b.config(bankgen.Config(topic, 8, "global", true) + spreadProjection)
	cfg.Projections[0].BatchSize = 200

	var insts []*instance
	for range 3 {
		p := processor.New(cfg, processor.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: logLevel()}))})
		ctx, cancel := context.WithCancel(context.Background())
		in := &instance{p: p, cancel: cancel, done: make(chan error, 1)}
		go func() { in.done <- p.Run(ctx) }()
		<-p.Started()
		insts = append(insts, in)
	}
	t.Cleanup(func() {
		for _, in := range insts {
			in.cancel()
			<-in.done //nolint:errcheck // some were killed; clean stops are checked where they matter
		}
	})
	owners := func(key string) (owners, partitions int) {
		for _, in := range insts {
			if n := in.p.Assigned(key); n > 0 {
				owners++
				partitions += n
			}
		}
		return
	}
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) && b.caughtUp("spread_v1", topic) }, "v1s did not catch up")
	eventually(t, 20*time.Second, func() bool { o, n := owners("balances_v1"); return o == 1 && n == 8 }, "balances_v1 is not owned by exactly one member")
	eventually(t, 20*time.Second, func() bool { o, n := owners("spread_v1"); return o >= 2 && n == 8 }, "spread_v1 is not spread")

	client := newClient(t, b)
	out, err := client.Send(context.Background(), control.Command{Command: "create", Replay: "balances_v2", Projection: "balances",
		Options: json.RawMessage(`{"start": true}`)})
	require.NoError(t, err)
	require.True(t, out.OK, out.Error)
	var owner *instance
	eventually(t, 20*time.Second, func() bool {
		for _, in := range insts {
			if in.p.Assigned("balances_v2") == 8 {
				owner = in
			}
		}
		return owner != nil && b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v2'") > 2000
	}, "balances_v2 did not start")
	processor.Kill(owner.p, owner.cancel)
	<-owner.done //nolint:errcheck // killed
	applied := b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v2'")
	require.Less(t, applied, int64(bank.Total()), "the owner was killed after the replay finished")
	var rest []*instance
	for _, in := range insts {
		if in != owner {
			rest = append(rest, in)
		}
	}
	insts = rest
	b.kafka.Produce(bank.Events(2000)...)

	for _, key := range []string{"balances_v1", "balances_v2", "spread_v1"} {
		eventually(t, 60*time.Second, func() bool { return b.caughtUp(key, topic) }, "%s did not catch up after losing an instance", key)
	}
	require.Equal(t, bank.Balances(), b.balances("balances_v2"))
	require.Equal(t, bank.Counts(), b.counts("balances_v2"))
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, int64(bank.Total()), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v2'"))
	eventually(t, 20*time.Second, func() bool { o, n := owners("balances_v2"); return o == 1 && n == 8 }, "balances_v2 is not owned by one of the survivors")

	// The control plane survived too (the killed instance may have been the leader).
	out, err = client.Send(context.Background(), control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"wait": "30s"}`)})
	require.NoError(t, err)
	require.True(t, out.OK, out.Error)
	require.Equal(t, bank.Balances(), b.balances("public"))
}

func newClient(t *testing.T, b *bundle) *control.Client {
	t.Helper()
	cfg := b.config(bankgen.Config("bank.accounts", 1, "global", false))
	c, err := control.NewClient(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// Fetching a partition pauses while its queue is full, and the pause is the client's, so it
// outlives a rebalance. Members joining and leaving in the middle of a replay with small queues
// (so that partitions are paused when the group rebalances) must not leave a partition paused
// for good, which in global order would stall the whole merge.
func TestFetchesPausedBeforeARebalanceResumeAfterIt(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 8})
	bank := bankgen.New(topic, 8, 200, 7)
	b.kafka.Produce(bank.Events(50000)...)
	cfg := b.config(bankgen.Config(topic, 8, "global", false))
	cfg.Projections[0].BatchSize = 20

	a := b.start(cfg)
	applied := func() int64 {
		return b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v1'")
	}
	eventually(t, 30*time.Second, func() bool { return applied() > 1000 }, "balances_v1 did not start")
	for i := range 4 {
		before := applied()
		require.True(t, i > 0 || before < int64(bank.Total()), "the replay finished before the rebalances")
		other := b.start(cfg)
		time.Sleep(500 * time.Millisecond)
		require.NoError(t, other.stop(), "instance %d", i)
		eventually(t, 30*time.Second, func() bool { return applied() > before+500 || b.caughtUp("balances_v1", topic) },
			"no progress after rebalance %d (a partition stayed paused?): %v", i, b.checkpoints("balances_v1", topic))
	}
	eventually(t, 120*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "balances_v1 did not catch up: %v", b.checkpoints("balances_v1", topic))
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, int64(bank.Total()), applied())
	require.NoError(t, a.stop())
}
