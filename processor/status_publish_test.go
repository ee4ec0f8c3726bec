package processor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
)

// A command's outcome is published after the statuses it changed: an operator who runs a command
// and then `kreplay status` sees the new state, not the one before the command (the status topic
// used to catch up only at the next status_interval). A removed version's record is cleared by
// then too.
func TestTheStatusTopicHasTheNewStateWhenTheOutcomeArrives(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 2})
	bank := bankgen.New(topic, 2, 20, 7)
	b.kafka.Produce(bank.Events(200)...)
	cfg := b.config(bankgen.Config(topic, 2, "global", false))
	cfg.Control.StatusInterval = time.Hour // only commands make the statuses move
	b.start(cfg)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "v1 did not catch up")

	cl, err := control.NewClient(cfg, nil)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	states := func() map[string]string {
		sts, err := cl.Statuses(ctx)
		require.NoError(t, err)
		out := map[string]string{}
		for _, st := range sts {
			out[st.Key] = st.State
		}
		return out
	}
	send := func(command, replay, options string) {
		t.Helper()
		cmd := control.Command{ID: command + "-" + replay, Command: command, Replay: replay, Projection: "balances"}
		if options != "" {
			cmd.Options = json.RawMessage(options)
		}
		o, err := cl.Send(ctx, cmd)
		require.NoError(t, err)
		require.True(t, o.OK, o.Error)
	}

	send("create", "balances_v2", "")
	require.Equal(t, "created", states()["balances_v2"])
	send("start", "balances_v2", "")
	require.Contains(t, []string{"replaying", "tailing"}, states()["balances_v2"])
	send("pause", "balances_v2", "")
	require.Equal(t, "paused", states()["balances_v2"])
	send("remove", "balances_v2", "")
	require.Equal(t, map[string]string{"balances_v1": "live"}, states(), "the removed version's record is cleared")

	// The commands are keyed by replay key (docs/ARCHITECTURE.md).
	rd, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.Addrs...), kgo.ConsumeTopics(cfg.Kafka.ControlTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer rd.Close()
	var keys []string
	for len(keys) < 4 && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) { keys = append(keys, string(r.Key)) })
	}
	require.Equal(t, []string{"balances_v2", "balances_v2", "balances_v2", "balances_v2"}, keys)
}

// A removed version's status record is cleared by a tombstone, and a new leader clears the records
// of recent removals again (its predecessor may have died first), but not of old ones: leader
// changes do not rewrite the whole history of removals.
func TestRemovedVersionsAreTombstonedOnceRecentlyRemoved(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 1})
	cfg := b.config(bankgen.Config(topic, 1, "global", false))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := b.start(cfg)
	cl, err := control.NewClient(cfg, nil)
	require.NoError(t, err)
	defer cl.Close()
	for _, key := range []string{"balances_v2", "balances_v3"} {
		for _, c := range []string{"create", "remove"} {
			o, err := cl.Send(ctx, control.Command{ID: c + "-" + key, Command: c, Replay: key, Projection: "balances"})
			require.NoError(t, err)
			require.True(t, o.OK, o.Error)
		}
	}
	tombstones := func() map[string]int {
		rd, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.Addrs...), kgo.ConsumeTopics(cfg.Kafka.StatusTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		require.NoError(t, err)
		defer rd.Close()
		end := b.kafka.EndOffsets(cfg.Kafka.StatusTopic)[0]
		n := map[string]int{}
		for seen := int64(0); seen < end && ctx.Err() == nil; {
			rd.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
				seen = rec.Offset + 1
				if rec.Value == nil {
					n[string(rec.Key)]++
				}
			})
		}
		return n
	}
	require.Equal(t, map[string]int{"balances_v2": 1, "balances_v3": 1}, tombstones())

	// balances_v2 was removed two days ago: a new leader leaves it alone; balances_v3's removal
	// is recent: cleared again.
	_, err = b.db.Exec(ctx, "UPDATE kreplay.versions SET removed_at = now() - interval '2 days' WHERE key = 'balances_v2'")
	require.NoError(t, err)
	require.NoError(t, r.stop())
	b.start(cfg)
	eventually(t, 20*time.Second, func() bool { return tombstones()["balances_v3"] == 2 }, "the new leader did not clear balances_v3's record")
	require.Equal(t, map[string]int{"balances_v2": 1, "balances_v3": 2}, tombstones())
}
