package processor_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

const onErrorConfig = `sources:
  - topic: bank.accounts
    partitions: 4
projections:
%s`

func onErrorProjection(name, policy string) string {
	return fmt.Sprintf(`  - name: %[1]s
    on_error: %[2]s
    sources: [bank.accounts]
    tables:
      - CREATE TABLE %[1]s_balances (account_id text PRIMARY KEY, total bigint NOT NULL)
    handlers:
      MoneyDeposited: INSERT INTO %[1]s_balances AS b VALUES (@aggregate_id, (@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
      MoneyWithdrawn: INSERT INTO %[1]s_balances AS b VALUES (@aggregate_id, -(@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total
`, name, policy)
}

// Poison events (undecodable, or refused by their handler) follow each projection's on_error
// policy: fail stops that version with the reason and the event's position while the others go
// on; skip counts them and goes on; dead_letter copies them, with the reason in headers, to
// kreplay.dead_letter and goes on. Nothing is dropped silently.
func TestPoisonEventsFollowTheOnErrorPolicy(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 50, 3)
	good := bank.Events(2000)
	at := func(ms int) time.Time { return bank.Start.Add(time.Duration(ms) * time.Millisecond) }
	poison := []*kgo.Record{
		{Topic: topic, Partition: 1, Key: []byte("acct-00001"), Value: []byte(`{not json`), Timestamp: at(300)},
		{Topic: topic, Partition: 2, Key: []byte("acct-00002"), Value: []byte(`{"id":"p2","aggregate_id":"acct-00002","data":{}}`), Timestamp: at(900)},
		bankgen.Record(topic, 3, bankgen.Event{ID: "p3", Type: "MoneyDeposited", AggregateID: "acct-00003", Version: 1,
			CreatedAt: at(1500), Data: map[string]string{"amount": "abc"}}),
	}
	b.kafka.Produce(append(append(append([]*kgo.Record{}, good[:700]...), poison...), good[700:]...)...)
	var poisonOffsets []int64
	for _, r := range poison {
		poisonOffsets = append(poisonOffsets, r.Offset)
	}

	reg := prometheus.NewRegistry()
	cfg := b.config(fmt.Sprintf(onErrorConfig, onErrorProjection("strict", "fail")+onErrorProjection("lenient", "skip")+onErrorProjection("careful", "dead_letter")))
	logs := &logBuffer{}
	p := processor.New(cfg, processor.Options{Registry: reg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done, "a clean shutdown") })
	<-p.Started()

	for _, key := range []string{"lenient_v1", "careful_v1"} {
		eventually(t, 30*time.Second, func() bool { return b.caughtUp(key, topic) }, "%s did not catch up", key)
	}
	want := bank.Balances()
	for _, name := range []string{"lenient", "careful"} {
		got := storetest.Int64Map(t, b.db, "SELECT account_id, total FROM public."+name+"_balances")
		require.Equal(t, want, got, "%s: balances of the good events", name)
		require.Equal(t, int64(3), b.scalar("SELECT sum(skipped_events) FROM kreplay.checkpoints WHERE version = $1", name+"_v1"))
	}
	failed := func(reason string) float64 {
		return metricValue(t, reg, "kreplay_events_failed_total",
			map[string]string{"projection": "lenient", "version": "lenient_v1", "reason": reason, "policy": "skip"})
	}
	require.Equal(t, 2.0, failed("decode"))
	require.Equal(t, 1.0, failed("handler"))

	// The strict version stopped at the first poison event in merge order, naming it.
	eventually(t, 30*time.Second, func() bool {
		return b.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'strict_v1' AND state = 'failed'") == 1
	}, "strict_v1 did not fail")
	var reason, errTopic string
	var errPart int32
	var errOffset int64
	require.NoError(t, b.db.QueryRow(context.Background(), "SELECT error, error_topic, error_partition, error_offset FROM kreplay.versions WHERE key = 'strict_v1'").
		Scan(&reason, &errTopic, &errPart, &errOffset))
	require.Equal(t, topic, errTopic)
	require.Equal(t, int32(1), errPart)
	require.Equal(t, poisonOffsets[0], errOffset)
	require.Contains(t, reason, "decode")
	require.Equal(t, poisonOffsets[0], b.checkpoints("strict_v1", topic)[1], "strict_v1 stopped right before the poison event")
	require.Regexp(t, fmt.Sprintf(`level=ERROR msg="version failed; [^"]*" projection=strict version=strict_v1 reason="decode error: .* \(topic %s partition 1 offset %d\)"`,
		regexp.QuoteMeta(topic), poisonOffsets[0]), logs.String(), "serve's log says which version failed and why")

	// The dead letters are the poison records, with the reason and position in headers.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.kafka.Addrs...), kgo.ConsumeTopics("kreplay.dead_letter"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	var letters []*kgo.Record
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	for len(letters) < 3 && fctx.Err() == nil {
		cl.PollFetches(fctx).EachRecord(func(r *kgo.Record) { letters = append(letters, r) })
	}
	require.Len(t, letters, 3)
	for _, l := range letters {
		h := map[string]string{}
		for _, x := range l.Headers {
			h[x.Key] = string(x.Value)
		}
		require.Equal(t, "careful_v1", h[processor.HeaderVersion])
		require.NotEmpty(t, h[processor.HeaderError])
		part, _ := strconv.Atoi(h[processor.HeaderPartition])
		off, _ := strconv.ParseInt(h[processor.HeaderOffset], 10, 64)
		require.Equal(t, string(poison[part-1].Value), string(l.Value), "dead letter of partition %d", part)
		require.Equal(t, poisonOffsets[part-1], off)
	}
	require.NotContains(t, reason, "p3")
}

// metricValue is the value of the metric with exactly these labels (name=value pairs).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if fmt.Sprint(got) != fmt.Sprint(labels) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// logBuffer collects a processor's log lines (goroutine-safe).
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A statement that times out on every attempt (PostgreSQL's statement_timeout) does not succeed
// by retrying in silence: after a few attempts in a row the version fails, saying so, at the
// event it was applying, and nothing of the batch is written.
func TestAStatementThatAlwaysTimesOutFailsItsVersion(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 50, 5)
	b.kafka.Produce(bank.Events(100)...)
	slow := strings.Replace(onErrorProjection("slow", "skip"),
		"MoneyWithdrawn: INSERT INTO slow_balances AS b VALUES (@aggregate_id, -(@data->>'amount')::bigint)",
		"MoneyWithdrawn: INSERT INTO slow_balances AS b SELECT @aggregate_id, -(@data->>'amount')::bigint FROM pg_sleep(1)", 1)
	cfg := b.config(fmt.Sprintf(onErrorConfig, slow))
	sep := "?"
	if strings.Contains(cfg.Postgres.URL, "?") {
		sep = "&"
	}
	cfg.Postgres.URL += sep + "options=-c%20statement_timeout%3D200"
	b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.state("slow_v1") == store.StateFailed }, "slow_v1 did not fail")
	var reason string
	require.NoError(t, b.db.QueryRow(context.Background(), "SELECT error FROM kreplay.versions WHERE key = 'slow_v1'").Scan(&reason))
	require.Contains(t, reason, "timed out on 5 attempts in a row")
	require.Contains(t, reason, "57014")
	require.Zero(t, b.scalar("SELECT coalesce(sum(skipped_events), 0) FROM kreplay.checkpoints WHERE version = 'slow_v1'"), "a timeout is not a poison event")
}
