package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/kafkatest"
)

func policyProjection(name, policy string) string {
	return fmt.Sprintf(`  - name: %[1]s
    on_error: %[2]s
    sources: [bank.accounts]
    tables:
      - CREATE TABLE %[1]s (account_id text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL)
      - CREATE TABLE %[1]s_memos (event_id text PRIMARY KEY, bytes int NOT NULL)
    handlers:
      MoneyDeposited: INSERT INTO %[1]s AS b VALUES (@aggregate_id, (@data->>'amount')::bigint, 1) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, events = b.events + 1
      MoneyWithdrawn: INSERT INTO %[1]s AS b VALUES (@aggregate_id, -(@data->>'amount')::bigint, 1) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, events = b.events + 1
      MemoAttached: INSERT INTO %[1]s_memos VALUES (@event_id, length(@data->>'memo'))
      CardLost: INSERT INTO %[1]s_memos VALUES (@event_id, (@data->>'card')::int)
`, name, policy)
}

// Bad input: poison events (undecodable, or refused by their handler) under each on_error
// policy; a handler that fails for one event type only; an event larger than 1 MiB; hostile
// identifiers in the config (serve refuses to start, naming them) and in commands (refused,
// nothing created). The good events are applied exactly.
func TestFaultBadInput(t *testing.T) {
	start := time.Now()
	big := kfake.BrokerConfigs(map[string]string{"message.max.bytes": "8388608"})
	k := kafkatest.NewWithClient(t, map[string]int32{topic: 4}, []kfake.Opt{big}, []kgo.Opt{kgo.ProducerBatchMaxBytes(8 << 20)})
	e := newEnvOn(t, k, 4, "sources:\n  - topic: bank.accounts\n    partitions: 4\nprojections:\n"+
		policyProjection("strict", "fail")+policyProjection("lenient", "skip")+policyProjection("careful", "dead_letter"))
	e.produce(3000)
	memo := strings.Repeat("m", 1536<<10) // 1.5 MiB
	poison := []*kgo.Record{
		{Topic: topic, Partition: 1, Key: []byte("acct-00001"), Value: []byte(`{"type": "MoneyDeposited", "aggregate_id": 7`)},
		{Topic: topic, Partition: 2, Key: []byte("acct-00002"), Value: []byte("\x00\x01binary")},
		bankgen.Record(topic, 3, bankgen.Event{ID: "lost-1", Type: "CardLost", AggregateID: "acct-00003", Version: 1, CreatedAt: time.Now(), Data: map[string]string{"card": "not a number"}}),
		bankgen.Record(topic, 0, bankgen.Event{ID: "lost-2", Type: "CardLost", AggregateID: "acct-00004", Version: 1, CreatedAt: time.Now(), Data: map[string]string{"card": "also not"}}),
	}
	e.kafka.Produce(poison...)
	e.kafka.Produce(bankgen.Record(topic, 0, bankgen.Event{ID: "memo-1", Type: "MemoAttached", AggregateID: "acct-00005", Version: 1,
		CreatedAt: time.Now(), Data: map[string]string{"memo": memo}}))
	e.produce(2000)

	s := e.startServe()
	for _, key := range []string{"lenient_v1", "careful_v1"} {
		eventually(t, 60*time.Second, func() bool { return e.caughtUp(key) }, "%s did not catch up", key)
	}
	want, counts, _ := e.expected()
	exact := true
	for _, name := range []string{"lenient", "careful"} {
		got, gotCounts := map[string]int64{}, map[string]int64{}
		rows, err := e.db.Query(context.Background(), fmt.Sprintf("SELECT account_id, total, events FROM %s_v1.%s", name, name))
		require.NoError(t, err)
		for rows.Next() {
			var a string
			var v, n int64
			require.NoError(t, rows.Scan(&a, &v, &n))
			got[a], gotCounts[a] = v, n
		}
		exact = exact && equalMaps(want, got) && equalMaps(counts, gotCounts)
		require.Equal(t, int64(4), e.scalar("SELECT sum(skipped_events) FROM kreplay.checkpoints WHERE version = $1", name+"_v1"), name)
		require.Equal(t, int64(len(memo)), e.scalar(fmt.Sprintf("SELECT bytes FROM %s_v1.%s_memos WHERE event_id = 'memo-1'", name, name)), "the 1.5 MiB event was applied")
	}
	eventually(t, 30*time.Second, func() bool {
		return e.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'strict_v1' AND state = 'failed'") == 1
	}, "strict_v1 did not fail")
	reason := e.strings("SELECT error || ' @ ' || error_topic || '[' || error_partition || ']:' || error_offset FROM kreplay.versions WHERE key = 'strict_v1'")[0]
	require.Regexp(t, `bank\.accounts\[\d\]:\d+$`, reason)
	require.Equal(t, 4.0, s.metric("kreplay_events_failed_total", `policy="dead_letter"`))
	letters := e.kafka.EndOffsets("kreplay.dead_letter")
	require.Equal(t, int64(4), letters[0])

	// Hostile identifiers in commands are refused and create nothing.
	c := e.client()
	for _, key := range []string{`x"; DROP SCHEMA public CASCADE; --`, "x\x00y", "Select", "select", "pg_toast", "public", strings.Repeat("k", 64), "kreplay", "1abc"} {
		out := command(c, 20*time.Second, control.Command{Command: "create", Replay: key, Projection: "lenient", Options: json.RawMessage(`{"start": true}`)})
		require.NotNil(t, out, "%q", key)
		require.False(t, out.OK, "%q", key)
		require.Regexp(t, `replay key|field "replay"`, out.Error, "%q", key) // refused before anything is recorded
	}
	require.Equal(t, int64(3), e.scalar("SELECT count(*) FROM kreplay.versions"))
	require.Equal(t, int64(1), e.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'"))
	s.stop(t)

	// Hostile identifiers in the config: serve refuses to start and names them.
	refused := 0
	for bad, want := range map[string]string{
		"name: lenient":                    "",
		"name: \"Lenient\"":                `"Lenient"`,
		"name: \"x'; DROP TABLE y; --\"":   `"x'; DROP TABLE y; --"`,
		"name: \"select\"":                 `"select"`,
		"name: " + strings.Repeat("n", 70): strings.Repeat("n", 70),
		"name: \"pg_catalog\"":             `"pg_catalog"`,
	} {
		if want == "" {
			continue
		}
		cfg := strings.Replace(e.yaml, "name: lenient", bad, 1)
		path := filepath.Join(t.TempDir(), "hostile.yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
		out, err := exec.Command(binary, "serve", "-c", path).CombinedOutput()
		require.Error(t, err, bad)
		require.Contains(t, string(out), want, bad)
		refused++
	}
	record(t, row{Scenario: "6 bad input", Faults: fmt.Sprintf("4 poison events x 3 policies, a 1.5 MiB event, 9 hostile keys in commands, %d hostile names in config", refused),
		Events: int64(5000 + 5), Exact: exact, Took: time.Since(start)})
	require.True(t, exact)
}

// Lock contention: a reader holds a long transaction on a live view while promote runs. v2 has
// v1's shape, so the live views are routed over both (since create): the promotion only updates
// the catalog, completes while the long transaction is still open, in one attempt, and the other
// readers never queue. (A promotion that repoints the views, of another shape, retries with
// lock_timeout instead: processor/TestALongReaderMakesPromoteRetryWithoutBlockingOthers.)
func TestFaultLockContention(t *testing.T) {
	start := time.Now()
	e := newEnv(t, 4, bankgen.Config(topic, 4, "global", true))
	e.produce(5000)
	s := e.startServe()
	c := e.client()
	out := command(c, 30*time.Second, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	require.NotNil(t, out)
	eventually(t, 60*time.Second, func() bool {
		return e.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2' AND state = 'tailing'") == 1
	}, "v2 did not tail")

	ctx := context.Background()
	long, err := e.db.Begin(ctx)
	require.NoError(t, err)
	var n int64
	require.NoError(t, long.QueryRow(ctx, "SELECT count(*) FROM public.balances").Scan(&n))
	var reads, errs atomic.Int64
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for rctx.Err() == nil {
				var x int64
				if err := e.db.QueryRow(rctx, "SELECT count(*) FROM public.balances").Scan(&x); err != nil {
					if rctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				reads.Add(1)
			}
		})
	}
	promoted := make(chan *control.Outcome, 1)
	go func() {
		promoted <- command(c, 60*time.Second, control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"wait": "30s"}`)})
	}()
	select {
	case out = <-promoted:
	case <-time.After(30 * time.Second):
		t.Fatal("the promotion waited for the long reader transaction")
	}
	time.Sleep(500 * time.Millisecond)
	during := reads.Load()
	require.NoError(t, long.Commit(ctx))
	stop()
	wg.Wait()
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)
	var rep control.SwapReport
	require.NoError(t, json.Unmarshal(out.Result, &rep))
	require.True(t, rep.Routed, "the views were routed over v1 and v2")
	require.Equal(t, 1, rep.Attempts)
	require.Greater(t, during, int64(50), "other readers were queued behind the swap")
	require.Zero(t, errs.Load())
	exact := e.exact(bankTables)
	s.stop(t)
	_, _, total := e.expected()
	record(t, row{Scenario: "5 lock contention", Faults: fmt.Sprintf("a reader transaction open across a routed promote: %d swap attempt, %d other reads meanwhile, 0 errors", rep.Attempts, during),
		Events: int64(total), Exact: exact, Took: time.Since(start)})
	require.True(t, exact)
}
