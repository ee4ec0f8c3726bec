package processor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/kafkatest"
)

const logConfig = `sources:
  - topic: orders
    partitions: 3
  - topic: payments
    partitions: 2
projections:
  - name: merged
    ordering: %s
    sources: [orders, payments]
    tables:
      - CREATE TABLE log (seq bigserial PRIMARY KEY, event_id text NOT NULL, topic text NOT NULL, part int NOT NULL, off bigint NOT NULL, pid int NOT NULL DEFAULT pg_backend_pid())
    handlers:
      E: INSERT INTO log (event_id, topic, part, off) VALUES (@event_id, @topic, @partition, @offset)
`

type logEvent struct {
	id        string
	topic     string
	partition int32
	offset    int64
	created   time.Time
	version   int64
}

// tiedLog produces n events over orders (3 partitions) and payments (2 partitions) with many
// equal created_at values and versions; in orders[1] created_at often steps back in time.
func tiedLog(t *testing.T, k *kafkatest.Cluster, n int) []logEvent {
	t.Helper()
	rnd := rand.New(rand.NewPCG(42, 43))
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	parts := []struct {
		topic string
		p     int32
	}{{"orders", 0}, {"orders", 1}, {"orders", 2}, {"payments", 0}, {"payments", 1}}
	next := map[string]int64{}
	clock := map[string]int{}
	var out []logEvent
	var recs []*kgo.Record
	for i := range n {
		tp := parts[rnd.IntN(len(parts))]
		name := fmt.Sprintf("%s/%d", tp.topic, tp.p)
		step := rnd.IntN(3) // 0: same time as the partition's previous event (a tie)
		if tp.topic == "orders" && tp.p == 1 && rnd.IntN(3) == 0 {
			step = -rnd.IntN(4) // steps back in time
		}
		clock[name] += step
		created := base.Add(time.Duration(clock[name]) * time.Second)
		ev := logEvent{id: fmt.Sprintf("e%04d", i), topic: tp.topic, partition: tp.p, offset: next[name], created: created, version: int64(rnd.IntN(3))}
		next[name]++
		out = append(out, ev)
		recs = append(recs, bankgen.Record(tp.topic, tp.p, bankgen.Event{ID: ev.id, Type: "E", AggregateID: "a", Version: ev.version, CreatedAt: created, Data: map[string]int{"i": i}}))
	}
	k.Produce(recs...)
	return out
}

// mergeOrder is the k-way merge of docs/ARCHITECTURE.md, computed here independently of kreplay: each
// partition in log order; repeatedly emit the smallest head by (created_at, version, topic,
// partition, offset).
func mergeOrder(events []logEvent) []string {
	queues := map[string][]logEvent{}
	var names []string
	for _, e := range events {
		name := fmt.Sprintf("%s/%d", e.topic, e.partition)
		if _, ok := queues[name]; !ok {
			names = append(names, name)
		}
		queues[name] = append(queues[name], e)
	}
	sort.Strings(names)
	less := func(a, b logEvent) bool {
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created)
		}
		if a.version != b.version {
			return a.version < b.version
		}
		if a.topic != b.topic {
			return a.topic < b.topic
		}
		if a.partition != b.partition {
			return a.partition < b.partition
		}
		return a.offset < b.offset
	}
	var order []string
	for {
		best := ""
		for _, n := range names {
			if len(queues[n]) > 0 && (best == "" || less(queues[n][0], queues[best][0])) {
				best = n
			}
		}
		if best == "" {
			return order
		}
		order = append(order, queues[best][0].id)
		queues[best] = queues[best][1:]
	}
}

func (b *bundle) logOrder(schema string) []string {
	b.t.Helper()
	rows, err := b.db.Query(context.Background(), "SELECT event_id FROM "+schema+".log ORDER BY seq")
	require.NoError(b.t, err)
	var out []string
	for rows.Next() {
		var id string
		require.NoError(b.t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(b.t, rows.Err())
	return out
}

// ordering: global applies events in exactly the k-way-merge order, ties and steps back in time
// included.
func TestGlobalOrderIsTheKWayMerge(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"orders": 3, "payments": 2})
	events := tiedLog(t, b.kafka, 600)
	cfg := b.config(fmt.Sprintf(logConfig, "global"))
	cfg.Projections[0].BatchSize = 37 // many batches: the order must hold across them
	b.start(cfg)
	want := mergeOrder(events)
	eventually(t, 30*time.Second, func() bool { return len(b.logOrder("public")) == len(want) }, "not all events applied")
	require.Equal(t, want, b.logOrder("public"))
	require.Equal(t, int64(1), b.scalar("SELECT count(DISTINCT pid) FROM public.log"), "one applier for a global order")
}

// ordering: partition applies partitions in parallel (several appliers) and keeps each
// partition's order.
func TestPartitionOrderIsParallelAndKeepsEachPartitionsOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{"orders": 3, "payments": 2})
	events := tiedLog(t, b.kafka, 3000)
	cfg := b.config(fmt.Sprintf(logConfig, "partition"))
	cfg.Projections[0].BatchSize = 50
	cfg.Projections[0].Workers = 3
	b.start(cfg)
	eventually(t, 30*time.Second, func() bool { return len(b.logOrder("public")) == len(events) }, "not all events applied")
	require.Equal(t, int64(3), b.scalar("SELECT count(DISTINCT pid) FROM public.log"), "three parallel appliers")
	rows, err := b.db.Query(context.Background(), "SELECT topic, part, off FROM public.log ORDER BY seq")
	require.NoError(t, err)
	last := map[string]int64{}
	n := 0
	for rows.Next() {
		var topic string
		var part int32
		var off int64
		require.NoError(t, rows.Scan(&topic, &part, &off))
		name := fmt.Sprintf("%s/%d", topic, part)
		if prev, ok := last[name]; ok {
			require.Equal(t, prev+1, off, "partition %s applied out of order", name)
		} else {
			require.Equal(t, int64(0), off, "partition %s did not start at 0", name)
		}
		last[name] = off
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(events), n)
}
