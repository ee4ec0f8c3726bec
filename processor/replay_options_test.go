package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

const twoTopicConfig = `sources:
  - topic: bank.accounts
    partitions: 4
  - topic: bank.cards
    partitions: 2
projections:
  - name: balances
    sources: [bank.accounts, bank.cards]
    tables:
      - CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL)
    handlers:
      MoneyDeposited: INSERT INTO balances AS b VALUES (@aggregate_id, (@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
      MoneyWithdrawn: INSERT INTO balances AS b VALUES (@aggregate_id, -(@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
`

// expectBalances recomputes balances from records, keeping those keep accepts.
func expectBalances(t *testing.T, recs []*kgo.Record, keep func(*kgo.Record, bankgen.Event) bool) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range recs {
		var ev struct {
			bankgen.Event
			Data struct {
				Amount int64 `json:"amount"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(r.Value, &ev))
		if !keep(r, ev.Event) {
			continue
		}
		switch ev.Type {
		case "MoneyDeposited":
			out[ev.AggregateID] += ev.Data.Amount
		case "MoneyWithdrawn":
			out[ev.AggregateID] -= ev.Data.Amount
		}
	}
	return out
}

// --since, --topics and --event-types produce exactly the rows their filter implies; a version
// filtered by event type still advances its checkpoints over the other types.
func TestReplayFilters(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"bank.accounts": 4, "bank.cards": 2})
	accounts := bankgen.New("bank.accounts", 4, 100, 21)
	cards := bankgen.New("bank.cards", 2, 30, 22)
	cards.Start = accounts.Start.Add(500 * time.Millisecond) // interleaved in time
	recs := append(accounts.Events(6000), cards.Events(2000)...)
	b.kafka.Produce(recs...)
	r := b.start(b.config(twoTopicConfig))
	m := r.p.Manager()
	ctx := context.Background()

	since := accounts.Start.Add(3000 * time.Millisecond)
	for _, req := range []lifecycle.CreateRequest{
		{Key: "since_v", Projection: "balances", Since: &since, Start: true},
		{Key: "cards_v", Projection: "balances", Topics: []string{"bank.cards"}, Start: true},
		{Key: "deposits_v", Projection: "balances", EventTypes: []string{"MoneyDeposited"}, Start: true},
	} {
		_, err := m.Create(ctx, req)
		require.NoError(t, err, req.Key)
	}
	for _, key := range []string{"balances_v1", "since_v", "deposits_v"} {
		eventually(t, 30*time.Second, func() bool { return b.caughtUp(key, "bank.accounts") && b.caughtUp(key, "bank.cards") }, "%s did not catch up", key)
	}
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("cards_v", "bank.cards") }, "cards_v did not catch up")

	all := func(*kgo.Record, bankgen.Event) bool { return true }
	require.Equal(t, expectBalances(t, recs, all), b.balances("public"))
	require.Equal(t, expectBalances(t, recs, func(r *kgo.Record, _ bankgen.Event) bool { return !r.Timestamp.Before(since) }), b.balances("since_v"))
	require.Equal(t, expectBalances(t, recs, func(r *kgo.Record, _ bankgen.Event) bool { return r.Topic == "bank.cards" }), b.balances("cards_v"))
	require.Equal(t, expectBalances(t, recs, func(_ *kgo.Record, e bankgen.Event) bool { return e.Type == "MoneyDeposited" }), b.balances("deposits_v"))
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.checkpoints WHERE version = 'cards_v' AND topic = 'bank.accounts'"))
	require.Equal(t, int64(len(recs)), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'deposits_v'"),
		"every event advances the checkpoint, applied or filtered")

	// Bad options are refused, naming the problem, and change nothing.
	for _, tc := range []struct {
		req  lifecycle.CreateRequest
		want string
	}{
		{lifecycle.CreateRequest{Key: "x1", Projection: "nope"}, `unknown projection "nope"`},
		{lifecycle.CreateRequest{Key: "x2", Projection: "balances", Topics: []string{"bank.loans"}}, `topic "bank.loans" is not a source`},
		{lifecycle.CreateRequest{Key: "x3", Projection: "balances", EventTypes: []string{"CardLost"}}, `event type "CardLost" has no handler`},
		{lifecycle.CreateRequest{Key: "Bad-Key", Projection: "balances"}, `"Bad-Key"`},
		{lifecycle.CreateRequest{Key: "balances_v1", Projection: "balances"}, "already used"},
	} {
		_, err := m.Create(ctx, tc.req)
		require.ErrorIs(t, err, control.ErrInvalid, tc.req.Key)
		require.ErrorContains(t, err, tc.want)
	}
	require.Equal(t, int64(4), b.scalar("SELECT count(*) FROM kreplay.versions"))
}

// A replay of a log with ties and out-of-order created_at applies the events in the same order
// as the live version that consumed the same log: the merge is deterministic.
func TestReplayOrderEqualsLiveOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"orders": 3, "payments": 2})
	events := tiedLog(t, b.kafka, 800)
	r := b.start(b.config(fmt.Sprintf(logConfig, "global")))
	eventually(t, 30*time.Second, func() bool { return len(b.logOrder("public")) == len(events) }, "v1 did not apply the log")
	_, err := r.p.Manager().Create(context.Background(), lifecycle.CreateRequest{Key: "merged_v2", Projection: "merged", Start: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return len(b.logOrder("merged_v2")) == len(events) }, "v2 did not apply the log")
	require.Equal(t, b.logOrder("merged_v1"), b.logOrder("merged_v2"))
	require.Equal(t, mergeOrder(events), b.logOrder("merged_v2"))
}

// A processor stopped abruptly during a replay resumes it from its checkpoints: no event is
// applied twice or lost.
func TestReplayResumesAfterAnAbruptStop(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 8})
	bank := bankgen.New(topic, 8, 300, 31)
	b.kafka.Produce(bank.Events(20000)...)
	cfg := b.config(bankgen.Config(topic, 8, "global", true))
	cfg.Projections[0].BatchSize = 100
	r := b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")
	require.NoError(t, r.stop())

	for i := range 3 {
		p := processor.New(cfg, processor.Options{Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		<-p.Started()
		if i == 0 {
			_, err := p.Manager().Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
			require.NoError(t, err)
		}
		applied := func() int64 {
			return b.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v2'")
		}
		before := applied()
		eventually(t, 30*time.Second, func() bool { return applied() > before+1500 }, "v2 made no progress")
		processor.Kill(p, cancel)
		<-done //nolint:errcheck // killed
		require.Less(t, applied(), int64(bank.Total()), "killed %d after the replay finished", i)
	}
	b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v2", topic) }, "v2 did not catch up")
	require.Equal(t, bank.Balances(), b.balances("balances_v2"))
	require.Equal(t, bank.Counts(), b.counts("balances_v2"))
	require.Equal(t, int64(bank.Total()), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v2'"))
	require.Equal(t, store.StateTailing, b.state("balances_v2"))
}

// Records deleted by retention make a replay "from offset zero" impossible: it is refused with
// the reason, unless --since or --allow-truncated-history is given.
func TestTruncatedHistoryIsRefused(t *testing.T) {
	t.Parallel()
	const topic = bankTopic
	b, r, _ := liveBank(t, 2, 20, 41, 400)

	// Retention deletes the first 50 records of partition 1.
	var del kadm.Offsets
	del.Add(kadm.Offset{Topic: topic, Partition: 1, At: 50})
	resp, err := b.kafka.Admin.DeleteRecords(context.Background(), del)
	require.NoError(t, err)
	require.NoError(t, resp.Error())
	m := r.p.Manager()
	_, err = m.Create(context.Background(), lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.ErrorIs(t, err, control.ErrInvalid)
	require.ErrorContains(t, err, "bank.accounts[1] starts at offset 50")
	require.ErrorContains(t, err, "--allow-truncated-history")
	require.Equal(t, int64(0), b.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2'"), "nothing was created")

	_, err = m.Create(context.Background(), lifecycle.CreateRequest{Key: "balances_v3", Projection: "balances", Start: true, AllowTruncatedHistory: true})
	require.NoError(t, err)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v3", topic) }, "v3 did not catch up")
	require.Equal(t, int64(350), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v3'"))
	require.True(t, strings.HasPrefix(b.checkpointsStart("balances_v3"), "0:0 1:50"))
}

func (b *bundle) checkpointsStart(key string) string {
	b.t.Helper()
	var s string
	require.NoError(b.t, b.db.QueryRow(context.Background(), `SELECT string_agg(partition || ':' || start_offset, ' ' ORDER BY partition)
		FROM kreplay.checkpoints WHERE version = $1`, key).Scan(&s))
	return s
}
