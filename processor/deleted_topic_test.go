package processor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// A source topic deleted from Kafka is a loss of history the version cannot be rebuilt
// without: the version fails within seconds, naming the topic, its checkpoints stay where its
// last events were applied, and the rest of the installation (here a projection of the other
// topic only) keeps running.
func TestADeletedSourceTopicFailsItsVersionsOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"bank.a": 4, "bank.b": 2})
	bankA := bankgen.New("bank.a", 4, 100, 1)
	bankB := bankgen.New("bank.b", 2, 100, 2)
	b.kafka.Produce(bankA.Events(1000)...)
	b.kafka.Produce(bankB.Events(500)...)
	// balances reads bank.a and bank.b; ledger (the same handlers under other names) bank.a only.
	both := bankgen.Config("bank.a", 4, "global", false)
	both = strings.Replace(both, "sources:\n", "sources:\n  - topic: bank.b\n    partitions: 2\n", 1)
	both = strings.Replace(both, "sources: [bank.a]", "sources: [bank.a, bank.b]", 1)
	ledger := bankgen.Config("bank.a", 4, "global", false)
	ledger = ledger[strings.Index(ledger, "  - name: balances"):]
	ledger = strings.ReplaceAll(strings.ReplaceAll(ledger, "name: balances", "name: ledger"), "balances", "ledger")
	cfg := b.config(both + ledger)
	b.start(cfg)
	eventually(t, 60*time.Second, func() bool {
		return b.caughtUp("balances_v1", "bank.a") && b.caughtUp("balances_v1", "bank.b") && b.caughtUp("ledger_v1", "bank.a")
	}, "the versions did not catch up")
	endsB := b.kafka.EndOffsets("bank.b")

	_, err := kadm.NewClient(b.kafka.Client()).DeleteTopics(context.Background(), "bank.b")
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool { return b.state("balances_v1") == store.StateFailed }, "balances_v1 did not fail after bank.b was deleted")
	var reason string
	require.NoError(t, b.db.QueryRow(context.Background(), "SELECT error FROM kreplay.versions WHERE key = 'balances_v1'").Scan(&reason))
	require.Contains(t, reason, "source topic bank.b no longer exists in Kafka")
	require.Equal(t, endsB, b.checkpoints("balances_v1", "bank.b"), "bank.b's checkpoints stay where its last events were applied")

	// The rest of the installation keeps running.
	b.kafka.Produce(bankA.Events(500)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("ledger_v1", "bank.a") }, "ledger_v1 stalled: %v", b.checkpoints("ledger_v1", "bank.a"))
	require.Equal(t, bankA.Balances(), storetest.Int64Map(t, b.db, "SELECT account_id, total FROM public.ledger"))
	require.Equal(t, store.StateLive, b.state("ledger_v1"))
}
