package processor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
)

// A source topic deleted from Kafka does not stall the version: after a restart its other topics
// are consumed as before (the deleted topic's partitions are not assigned, and nobody waits for
// them), and the member does not rejoin the group again and again for partitions nobody can claim.
func TestADeletedSourceTopicDoesNotStallTheOthers(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"bank.a": 4, "bank.b": 2})
	bankA := bankgen.New("bank.a", 4, 100, 1)
	bankB := bankgen.New("bank.b", 2, 100, 2)
	b.kafka.Produce(bankA.Events(1000)...)
	b.kafka.Produce(bankB.Events(500)...)
	yaml := bankgen.Config("bank.a", 4, "global", false)
	yaml = strings.Replace(yaml, "sources:\n", "sources:\n  - topic: bank.b\n    partitions: 2\n", 1)
	yaml = strings.Replace(yaml, "sources: [bank.a]", "sources: [bank.a, bank.b]", 1)
	cfg := b.config(yaml)
	r := b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", "bank.a") && b.caughtUp("balances_v1", "bank.b") }, "balances_v1 did not catch up")
	require.NoError(t, r.stop())
	endsB := b.kafka.EndOffsets("bank.b")

	ctx := context.Background()
	adm := kadm.NewClient(b.kafka.Client())
	_, err := adm.DeleteTopics(ctx, "bank.b")
	require.NoError(t, err)
	b.start(cfg)
	b.kafka.Produce(bankA.Events(1000)...)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", "bank.a") }, "bank.a stalled after bank.b was deleted: %v", b.checkpoints("balances_v1", "bank.a"))

	want := bankA.Balances()
	for acct, v := range bankB.Balances() {
		want[acct] += v
	}
	require.Equal(t, want, b.balances("public"))
	require.Equal(t, endsB, b.checkpoints("balances_v1", "bank.b"), "bank.b's checkpoints stay where its last events were applied")

	// Past the orphan watch's horizon (rebalance + 2 session timeouts = 11s here), the member
	// has not left and rejoined for bank.b's partitions: the generation is unchanged.
	generation := func() int64 {
		return b.scalar("SELECT max(generation) FROM kreplay.checkpoints WHERE version = 'balances_v1' AND topic = 'bank.a'")
	}
	before := generation()
	time.Sleep(cfg.Kafka.RebalanceTimeout + 2*cfg.Kafka.SessionTimeout + 3*time.Second)
	require.Equal(t, before, generation())
	b.kafka.Produce(bankA.Events(500)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", "bank.a") }, "bank.a stalled: %v", b.checkpoints("balances_v1", "bank.a"))
}
