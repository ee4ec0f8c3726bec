package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/store/storetest"
)

// binary is the kreplay binary built by TestMain for the end-to-end test.
var binary string

func TestMain(m *testing.M) {
	var remove func()
	var err error
	if binary, remove, err = testkit.BuildBinary(".", "kreplay"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	remove()
	if code == 0 {
		// Every in-process serve and client must be gone: the commands leave no goroutines
		// behind.
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// env is what a CLI test works with: a kfake cluster with the bank topic, a database of its
// own, a config file for both, and a bank history generator.
type env struct {
	t      *testing.T
	kafka  *kafkatest.Cluster
	dbURL  string
	config string
	bank   *bankgen.Bank
}

const bankTopic = "bank.accounts"

func setup(t *testing.T) *env {
	t.Helper()
	return setupOn(t, kafkatest.New(t, map[string]int32{bankTopic: 4}), "", bankgen.Config(bankTopic, 4, "global", false))
}

// setupOn is an env on a given cluster (another installation beside the first one's), with
// head (top-level settings such as "installation: shop\n") and projections (sources: and
// projections:) in its config file.
func setupOn(t *testing.T, k *kafkatest.Cluster, head, projections string) *env {
	t.Helper()
	dbURL := storetest.NewDatabase(t)
	cfg := head + fmt.Sprintf(`kafka:
  brokers: [%q]
  session_timeout: 3s
  rebalance_timeout: 5s
postgres:
  url: %q
http:
  listen: "127.0.0.1:0"
control:
  status_interval: 200ms
`, strings.Join(k.Addrs, ","), dbURL) + projections
	path := filepath.Join(t.TempDir(), "kreplay.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return &env{t: t, kafka: k, dbURL: dbURL, config: path, bank: bankgen.New(bankTopic, 4, 40, 7)}
}

// produce writes the next n bank events.
func (e *env) produce(n int) { e.kafka.Produce(e.bank.Events(n)...) }

// liveBalances reads the live view public.balances (account -> total).
func (e *env) liveBalances() map[string]int64 {
	e.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dbURL)
	require.NoError(e.t, err)
	defer conn.Close(ctx)
	return storetest.Int64Map(e.t, conn, "SELECT account_id, total FROM public.balances")
}

// statusJSON is a version's status as `status -o json` prints it, decoded loosely so that
// tests check the JSON contract's field names rather than Go's.
type statusJSON map[string]any

func (s statusJSON) str(k string) string { v, _ := s[k].(string); return v }
func (s statusJSON) num(k string) float64 {
	v, _ := s[k].(float64)
	return v
}

func decodeStatuses(t *testing.T, out string) map[string]statusJSON {
	t.Helper()
	var list []statusJSON
	require.NoError(t, json.Unmarshal([]byte(out), &list), "status -o json: %s", out)
	byKey := map[string]statusJSON{}
	for _, s := range list {
		byKey[s.str("key")] = s
	}
	return byKey
}

// eventually polls cond until it holds, failing after timeout with the last reason cond gave.
var eventually = testkit.EventuallyWhy

// syncBuffer is a goroutine-safe buffer for a serve's logs.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// text runs a query that returns one value on the env's database, as text.
func (e *env) text(sql string, args ...any) string {
	e.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dbURL)
	require.NoError(e.t, err)
	defer conn.Close(ctx)
	var s string
	require.NoError(e.t, conn.QueryRow(ctx, sql, args...).Scan(&s), sql)
	return s
}

// outcomes are the outcomes on a status topic, by command id, in the order published; decoded
// loosely, so that tests check the JSON contract's field names.
func (e *env) outcomes(topic string) map[string][]map[string]any {
	e.t.Helper()
	ends := e.kafka.EndOffsets(topic)
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(e.t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := map[string][]map[string]any{}
	pos := map[int32]int64{}
	reached := func() bool {
		for p, end := range ends {
			if pos[p] < end {
				return false
			}
		}
		return true
	}
	for !reached() {
		fetches := cl.PollFetches(ctx)
		require.NoError(e.t, ctx.Err(), "read %s", topic)
		fetches.EachRecord(func(r *kgo.Record) {
			pos[r.Partition] = r.Offset + 1
			if id, ok := strings.CutPrefix(string(r.Key), "command:"); ok && r.Value != nil {
				var o map[string]any
				require.NoError(e.t, json.Unmarshal(r.Value, &o))
				out[id] = append(out[id], o)
			}
		})
	}
	return out
}

// finalOutcome waits for a command's final outcome (not the interim one of a command that
// runs) on a status topic.
func (e *env) finalOutcome(topic, id string) map[string]any {
	e.t.Helper()
	var last map[string]any
	eventually(e.t, 30*time.Second, func() (bool, string) {
		all := e.outcomes(topic)[id]
		if len(all) == 0 {
			return false, "no outcome for command " + id + " on " + topic
		}
		last = all[len(all)-1]
		return last["state"] != "running", fmt.Sprintf("command %s: %v", id, last)
	})
	return last
}
