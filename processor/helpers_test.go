package processor_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// bundle is what a processor test works with: a kfake cluster, a database of its own, and a
// pool on it to read what kreplay wrote.
type bundle struct {
	t     *testing.T
	kafka *kafkatest.Cluster
	dbURL string
	db    *pgxpool.Pool
}

func setup(t *testing.T, topics map[string]int32) *bundle {
	t.Helper()
	k := kafkatest.New(t, topics)
	dbURL := storetest.NewDatabase(t)
	db, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return &bundle{t: t, kafka: k, dbURL: dbURL, db: db}
}

// config parses a config for the bundle's broker and database, with quick intervals.
func (b *bundle) config(yaml string) *topology.Config {
	b.t.Helper()
	cfg, err := topology.Parse([]byte(yaml))
	require.NoError(b.t, err)
	cfg.Kafka.Brokers = b.kafka.Addrs
	cfg.Postgres.URL = b.dbURL
	cfg.HTTP.Listen = "off"
	cfg.Control.StatusInterval = 200 * time.Millisecond
	cfg.Kafka.SessionTimeout = 3 * time.Second
	cfg.Kafka.RebalanceTimeout = 5 * time.Second
	cfg.SetDefaults()
	require.NoError(b.t, cfg.Validate())
	return cfg
}

type running struct {
	p      *processor.Processor
	cancel context.CancelFunc
	done   chan error
}

// start runs a processor until stop or the end of the test.
func (b *bundle) start(cfg *topology.Config) *running {
	b.t.Helper()
	return b.startWith(cfg, processor.Options{})
}

// startWith runs a processor with options (a test logger and a 5s shutdown timeout by default).
func (b *bundle) startWith(cfg *topology.Config, opts processor.Options) *running {
	b.t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{b.t}, &slog.HandlerOptions{Level: logLevel()}))
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	p := processor.New(cfg, opts)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	select {
	case <-p.Started():
	case err := <-r.done:
		cancel()
		b.t.Fatalf("processor did not start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		b.t.Fatal("processor did not start within 60s")
	}
	b.t.Cleanup(func() {
		if err := r.stop(); err != nil {
			b.t.Errorf("processor stopped with: %v", err)
		}
	})
	return r
}

// bankTopic is the topic of the bank events in liveBank's set-up.
const bankTopic = "bank.accounts"

// liveBank produces events bank events over partitions of bankTopic and runs a processor with
// the bank projection (global order) until its live balances_v1 has applied them all.
func liveBank(t *testing.T, partitions int32, accounts int, seed uint64, events int) (*bundle, *running, *bankgen.Bank) {
	t.Helper()
	b := setup(t, map[string]int32{bankTopic: partitions})
	bank := bankgen.New(bankTopic, partitions, accounts, seed)
	b.kafka.Produce(bank.Events(events)...)
	r := b.start(b.config(bankgen.Config(bankTopic, partitions, "global", false)))
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) }, "balances_v1 did not catch up: %v", b.checkpoints("balances_v1", bankTopic))
	return b, r, bank
}

// stop shuts the processor down gracefully and returns Run's result.
func (r *running) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(60 * time.Second):
		return errors.New("processor did not stop within 60s")
	}
}

// eventually polls cond until it is true, failing after timeout with msg.
var eventually = testkit.Eventually

// balances reads schema.balances (account -> total).
func (b *bundle) balances(schema string) map[string]int64 {
	b.t.Helper()
	return storetest.Int64Map(b.t, b.db, "SELECT account_id, total FROM "+schema+".balances")
}

// checkpoints reads a version's checkpoints of a topic (partition -> next offset).
func (b *bundle) checkpoints(key, topic string) map[int32]int64 {
	b.t.Helper()
	rows, err := b.db.Query(context.Background(), "SELECT partition, next_offset FROM kreplay.checkpoints WHERE version = $1 AND topic = $2", key, topic)
	require.NoError(b.t, err)
	out := map[int32]int64{}
	for rows.Next() {
		var p int32
		var o int64
		require.NoError(b.t, rows.Scan(&p, &o))
		out[p] = o
	}
	require.NoError(b.t, rows.Err())
	return out
}

// caughtUp reports whether a version's checkpoints equal the topic's high watermarks.
func (b *bundle) caughtUp(key, topic string) bool {
	return maps.Equal(b.checkpoints(key, topic), b.kafka.EndOffsets(topic))
}

// produced is the number of records in the topic (the sum of its high watermarks).
func (b *bundle) produced(topic string) int64 {
	var n int64
	for _, o := range b.kafka.EndOffsets(topic) {
		n += o
	}
	return n
}

func (b *bundle) scalar(sql string, args ...any) int64 {
	b.t.Helper()
	var n int64
	require.NoError(b.t, b.db.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

func logLevel() slog.Level {
	if os.Getenv("KREPLAY_TEST_LOG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// groupName is a version's consumer group under the default installation name.
func groupName(projection, key string) string {
	cfg := &topology.Config{}
	cfg.SetDefaults()
	return cfg.GroupName(projection, key)
}
