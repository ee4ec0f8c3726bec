package faults

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
)

const spreadProjection = `  - name: spread
    ordering: partition
    workers: 3
    batch_size: 300
    sources: [bank.accounts]
    tables:
      - CREATE TABLE spread (account_id text PRIMARY KEY, total bigint NOT NULL, events bigint NOT NULL)
    handlers:
      MoneyDeposited: INSERT INTO spread AS b VALUES (@aggregate_id, (@data->>'amount')::bigint, 1) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, events = b.events + 1
      MoneyWithdrawn: INSERT INTO spread AS b VALUES (@aggregate_id, -(@data->>'amount')::bigint, 1) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, events = b.events + 1
`

var bankTables = map[string]string{"balances": "balances", "spread": "spread"}

// SIGKILL of the real binary at random points, again and again, while events arrive and
// commands run: in the middle of batches, of replays, of promotions and of removals. After the
// last restart every running version has exactly the values the log implies, its checkpoints
// equal the high watermarks, and the live views point at exactly one version each.
func TestFaultSIGKILL(t *testing.T) {
	start := time.Now()
	kills := pick(6, 30)
	e := newEnv(t, 8, bankgen.Config(topic, 8, "global", true)+spreadProjection)
	e.produce(pick(20000, 60000))
	c := e.client()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	next := 2
	actions := map[string]int{}
	for i := range kills {
		s := e.startServe()
		var wg sync.WaitGroup
		n := 1000 + rnd.IntN(2000) // rnd is the test goroutine's only
		wg.Go(func() { e.produce(n) })
		action := []string{"batch", "replay", "promote", "remove"}[i%4]
		keys := e.strings("SELECT key FROM kreplay.versions WHERE projection = 'balances' AND state IN ('tailing', 'retired', 'replaying') ORDER BY key")
		switch action {
		case "replay":
			if len(keys) < 3 {
				key := fmt.Sprintf("balances_v%d", next)
				next++
				wg.Go(func() {
					command(c, 5*time.Second, control.Command{Command: "create", Replay: key, Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
				})
			}
		case "promote":
			if len(keys) > 0 {
				key := keys[rnd.IntN(len(keys))]
				wg.Go(func() {
					command(c, 5*time.Second, control.Command{Command: "promote", Replay: key, Options: json.RawMessage(`{"max_lag": 100000, "wait": "3s"}`)})
				})
			}
		case "remove":
			if len(keys) > 1 {
				key := keys[rnd.IntN(len(keys))]
				wg.Go(func() { command(c, 5*time.Second, control.Command{Command: "remove", Replay: key}) })
			}
		}
		actions[action]++
		time.Sleep(time.Duration(100+rnd.IntN(900)) * time.Millisecond)
		s.kill()
		wg.Wait()
	}
	s := e.startServe()
	exact := e.exact(bankTables)
	// Removals a kill interrupted were finished by the next leader: no schema of a removed version is left.
	for _, key := range e.strings("SELECT key FROM kreplay.versions WHERE state = 'removed'") {
		eventually(t, 30*time.Second, func() bool { return e.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1", key) == 0 }, "the schema of removed %s is still there", key)
	}
	s.stop(t)
	_, _, total := e.expected()
	var acts []string
	for a, n := range actions {
		acts = append(acts, fmt.Sprintf("%s %d", a, n))
	}
	slices.Sort(acts)
	record(t, row{Scenario: "1 SIGKILL of the binary", Faults: fmt.Sprintf("%d kills (mid %v)", kills, acts), Events: int64(total), Exact: exact, Took: time.Since(start)})
	if !exact {
		t.Fatal("not exact after the kills")
	}
}

// Three instances run the same config; the one consuming a replay (a global version has one
// owner) is SIGKILLed in the middle of it. Its partitions move to another instance after the
// session timeout; the replay and the live projections (global and partition-ordered, whose
// partitions the three share) finish with exact values and no duplicates.
func TestFaultSIGKILLOneOfThree(t *testing.T) {
	start := time.Now()
	e := newEnv(t, 8, bankgen.Config(topic, 8, "global", true)+spreadProjection)
	e.yaml = strings.Replace(e.yaml, "    sources: [bank.accounts]\n    tables:\n      - CREATE TABLE balances", "    batch_size: 300\n    sources: [bank.accounts]\n    tables:\n      - CREATE TABLE balances", 1)
	e.produce(pick(60000, 200000))
	instances := []*serve{e.startServe(), e.startServe(), e.startServe()}
	eventually(t, 120*time.Second, func() bool { return e.caughtUp("balances_v1") && e.caughtUp("spread_v1") }, "v1s did not catch up")
	spread := 0
	eventually(t, 30*time.Second, func() bool {
		spread = 0
		for _, s := range instances {
			if v, _ := s.assignments(); v["spread_v1"] > 0 {
				spread++
			}
		}
		return spread >= 2
	}, "spread_v1 (ordering: partition) is not spread over the instances")
	c := e.client()
	out := command(c, 30*time.Second, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)
	var owner *serve
	applied := func() int64 {
		return e.scalar("SELECT coalesce(sum(applied_events), 0) FROM kreplay.checkpoints WHERE version = 'balances_v2'")
	}
	eventually(t, 60*time.Second, func() bool {
		for _, s := range instances {
			if v, _ := s.assignments(); v["balances_v2"] == 8 {
				owner = s
			}
		}
		return owner != nil && applied() > 5000
	}, "balances_v2 did not start on one instance")
	_, _, total := e.expected()
	owner.kill()
	at := applied()
	require.Less(t, at, int64(total), "the owner finished the replay before it was killed")
	e.produce(3000)
	exact := e.exact(bankTables)
	for _, s := range instances {
		if s != owner {
			s.stop(t)
		}
	}
	_, _, total = e.expected()
	record(t, row{Scenario: "1b SIGKILL of one of 3 instances", Faults: fmt.Sprintf("replay owner killed at %d of %d events; spread_v1 on %d instances", at, total, spread),
		Events: int64(total), Exact: exact, Took: time.Since(start)})
	require.True(t, exact)
	require.GreaterOrEqual(t, spread, 2, "a partition-ordered version is spread over the instances")
}
