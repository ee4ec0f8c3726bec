package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
)

// A live projection applies every event exactly once: its balances equal those computed from
// the events, its checkpoints reach the high watermarks, and the Kafka group's committed
// offsets equal the checkpoints, so lag tools see the truth.
func TestLiveProjectionAppliesEveryEventOnce(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 8})
	bank := bankgen.New(topic, 8, 500, 1)
	b.kafka.Produce(bank.Events(20000)...)

	r := b.start(b.config(bankgen.Config(topic, 8, "global", false)))
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "balances_v1 did not catch up: %v", b.checkpoints("balances_v1", topic))
	require.Equal(t, bank.Balances(), b.balances("public"))

	// New events while live.
	b.kafka.Produce(bank.Events(3000)...)
	eventually(t, 30*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "did not apply the live events")
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, int64(bank.Total()), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))

	group := groupName("balances", "balances_v1")
	eventually(t, 10*time.Second, func() bool {
		committed := b.kafka.Committed(group, topic)
		cps := b.checkpoints("balances_v1", topic)
		for p, o := range cps {
			if committed[p] != o {
				return false
			}
		}
		return len(committed) == 8
	}, "group offsets %v != checkpoints %v", b.kafka.Committed(group, topic), b.checkpoints("balances_v1", topic))
	require.Equal(t, int64(0), b.kafka.Lag(group, topic))
	require.NoError(t, r.stop())
}

// An error a lane cannot retry (neither a connection problem nor an event's fault: here a trigger
// on the checkpoints refuses every move) does not leave a member that holds the partitions and
// applies nothing: it rejoins after a backoff and resumes at the checkpoints once PostgreSQL
// accepts the batches again, and nothing is applied twice.
func TestALaneErrorThatCannotBeRetriedDoesNotStallTheVersion(t *testing.T) {
	t.Parallel()
	const topic = bankTopic
	b, r, bank := liveBank(t, 4, 100, 1, 2000)

	ctx := context.Background()
	_, err := b.db.Exec(ctx, `CREATE FUNCTION public.refuse_moves() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.next_offset <> OLD.next_offset THEN RAISE EXCEPTION 'checkpoints are frozen by the test'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_moves BEFORE UPDATE ON kreplay.checkpoints FOR EACH ROW EXECUTE FUNCTION public.refuse_moves()`)
	require.NoError(t, err)
	b.kafka.Produce(bank.Events(1000)...)
	time.Sleep(2 * time.Second) // batches are refused meanwhile; the member leaves and rejoins
	require.Equal(t, int64(2000), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))
	_, err = b.db.Exec(ctx, "DROP TRIGGER refuse_moves ON kreplay.checkpoints")
	require.NoError(t, err)

	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "balances_v1 stalled after the error: %v", b.checkpoints("balances_v1", topic))
	require.Equal(t, bank.Balances(), b.balances("public"))
	require.Equal(t, int64(bank.Total()), b.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))
	require.NoError(t, r.stop())
}
