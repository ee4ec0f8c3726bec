package processor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
)

// skewLedgerConfig is an order-sensitive projection: a ledger that numbers events in the order it
// applies them (seq), global ordering, max_lateness %s.
const skewLedgerConfig = `sources:
  - topic: ledger.events
    partitions: 4
projections:
  - name: ledger
    sources: [ledger.events]
    max_lateness: %s
    tables:
      - CREATE TABLE log (seq bigserial PRIMARY KEY, event_id text NOT NULL UNIQUE)
    handlers:
      E: INSERT INTO log (event_id) VALUES (@event_id)
    checks:
      - SELECT string_agg(event_id, ',' ORDER BY seq) FROM log
`

// skewedProducers produces, every 100ms for 3s, an event on each of partitions 1-3 created now,
// then one on partition 0 created a second ago: partition 0's producer is a second behind the
// others, and its events arrive after later ones. It returns the events in the order of the logs.
func skewedProducers(t *testing.T, b *bundle) []logEvent {
	t.Helper()
	const topic = "ledger.events"
	next := map[int32]int64{}
	var out []logEvent
	start := time.Now()
	for round := 0; time.Since(start) < 3*time.Second; round++ {
		now := time.Now().UTC()
		var recs []*kgo.Record
		for _, p := range []int32{1, 2, 3, 0} {
			created := now
			if p == 0 {
				created = now.Add(-time.Second)
			}
			ev := logEvent{id: fmt.Sprintf("r%03d-p%d", round, p), topic: topic, partition: p, offset: next[p], created: created}
			next[p]++
			out = append(out, ev)
			recs = append(recs, bankgen.Record(topic, p, bankgen.Event{ID: ev.id, Type: "E", AggregateID: "a", CreatedAt: created, Data: map[string]int{}}))
		}
		b.kafka.Produce(recs[:3]...) // later created_at first
		b.kafka.Produce(recs[3])
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// While tailing, the merge holds an event for max_lateness so that a partition whose producer
// is behind can show its earlier events first: the live version's ledger then equals a replay's
// and the created_at order, no event is late, and verify passes. With max_lateness 0 the same
// producers make late events, the live ledger differs from the replay's, and verify says so:
// the setting is what makes the difference.
func TestLiveOrderEqualsReplayOrderWithMaxLateness(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lateness string
		ordered  bool
	}{{"3s", true}, {"0s", false}} {
		t.Run("max_lateness "+tc.lateness, func(t *testing.T) {
			t.Parallel()
			const topic = "ledger.events"
			b := setup(t, map[string]int32{topic: 4})
			r := b.start(b.config(fmt.Sprintf(skewLedgerConfig, tc.lateness)))
			eventually(t, 30*time.Second, func() bool {
				return b.state("ledger_v1") == store.StateLive && b.caughtUp("ledger_v1", topic)
			}, "ledger_v1 did not go live")

			events := skewedProducers(t, b)
			want := mergeOrder(events)
			eventually(t, 30*time.Second, func() bool { return len(b.logOrder("ledger_v1")) == len(want) }, "ledger_v1 did not apply every event")
			live := b.logOrder("ledger_v1")

			m := r.p.Manager()
			_, err := m.Create(context.Background(), lifecycle.CreateRequest{Key: "ledger_v2", Projection: "ledger", Start: true})
			require.NoError(t, err)
			eventually(t, 30*time.Second, func() bool { return len(b.logOrder("ledger_v2")) == len(want) }, "ledger_v2 did not replay every event")
			require.Equal(t, want, b.logOrder("ledger_v2"), "a replay applies the created_at order")

			late := metricValue(t, r.p.Registry(), "kreplay_late_events_total", map[string]string{"projection": "ledger", "version": "ledger_v1"})
			eventually(t, 10*time.Second, func() bool {
				return b.scalar("SELECT late_events FROM kreplay.versions WHERE key = 'ledger_v1'") == int64(late)
			}, "status's late events do not match the metric's")
			st, err := m.VersionStatus(context.Background(), "ledger_v1")
			require.NoError(t, err)
			require.Equal(t, int64(late), st.LateEvents, "status shows the late events")

			rep, err := m.Verify(context.Background(), "ledger_v2")
			require.NoError(t, err)
			if tc.ordered {
				require.Equal(t, want, live, "the live ledger is the created_at order")
				require.Zero(t, late, "late events")
				require.True(t, rep.Passed, "verify: %+v", rep)
			} else {
				require.NotEqual(t, want, live, "without max_lateness the live ledger follows arrival")
				require.Positive(t, late, "late events")
				require.False(t, rep.Passed, "verify sees the live ledger's different order")
			}
		})
	}
}
