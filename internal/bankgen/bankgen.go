// Package bankgen generates a bank-account history (deposits and withdrawals keyed by account)
// and the balances it implies, for the demo, the benchmark and the tests, which compare what
// kreplay projected with values computed independently of it. It imports no test code, so the
// demo can ship in the binary.
package bankgen

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Bank generates a bank-account history (MoneyDeposited / MoneyWithdrawn events keyed by
// account, each account's events in version order in its partition) and keeps the balances it
// implies, so that tests can compare a projection with values computed independently of kreplay.
type Bank struct {
	Topic      string
	Partitions int32
	Accounts   int
	rnd        *rand.Rand
	versions   map[string]int64
	balances   map[string]int64
	counts     map[string]int64
	n          int
	Start      time.Time
}

// New returns a generator over accounts acct-00000.. spread by key hash over partitions.
func New(topic string, partitions int32, accounts int, seed uint64) *Bank {
	return &Bank{
		Topic: topic, Partitions: partitions, Accounts: accounts,
		rnd:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		versions: map[string]int64{}, balances: map[string]int64{}, counts: map[string]int64{},
		Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

// PartitionOf is the partition of an account (its key's hash).
func (b *Bank) PartitionOf(account string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(account))
	return int32(h.Sum32() % uint32(b.Partitions))
}

// Events returns the next n events as records (70% deposits, 30% withdrawals of 1..100),
// created one millisecond apart.
func (b *Bank) Events(n int) []*kgo.Record {
	out := make([]*kgo.Record, 0, n)
	for range n {
		acct := fmt.Sprintf("acct-%05d", b.rnd.IntN(b.Accounts))
		b.versions[acct]++
		amount := int64(1 + b.rnd.IntN(100))
		typ := "MoneyDeposited"
		if b.rnd.IntN(10) < 3 {
			typ = "MoneyWithdrawn"
			b.balances[acct] -= amount
		} else {
			b.balances[acct] += amount
		}
		b.counts[acct]++
		b.n++
		out = append(out, Record(b.Topic, b.PartitionOf(acct), Event{
			ID: fmt.Sprintf("ev-%d", b.n), Type: typ, AggregateID: acct, Version: b.versions[acct],
			CreatedAt: b.Start.Add(time.Duration(b.n) * time.Millisecond), Data: map[string]int64{"amount": amount},
		}))
	}
	return out
}

// Balances are the balances implied by every event generated so far.
func (b *Bank) Balances() map[string]int64 {
	out := make(map[string]int64, len(b.balances))
	for k, v := range b.balances {
		out[k] = v
	}
	return out
}

// Counts are the number of events per account generated so far.
func (b *Bank) Counts() map[string]int64 {
	out := make(map[string]int64, len(b.counts))
	for k, v := range b.counts {
		out[k] = v
	}
	return out
}

// Total is the number of events generated so far.
func (b *Bank) Total() int { return b.n }

// Config is a kreplay config for the bank topic: projection "balances" keeping the balance
// of every account; with withCount, also the number of events per account (a changed
// definition to replay).
func Config(topic string, partitions int32, ordering string, withCount bool) string {
	cols, vals, set := "", "", ""
	if withCount {
		cols, vals, set = ", events", ", 1", ", events = b.events + 1"
	}
	table := "CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL"
	if withCount {
		table += ", events bigint NOT NULL DEFAULT 0"
	}
	table += ")"
	return fmt.Sprintf(`sources:
  - topic: %[1]s
    partitions: %[2]d
projections:
  - name: balances
    ordering: %[3]s
    sources: [%[1]s]
    tables:
      - %[4]s
    handlers:
      MoneyDeposited: |
        INSERT INTO balances AS b (account_id, total, updated_at%[5]s)
        VALUES (@aggregate_id, (@data->>'amount')::bigint, @created_at%[6]s)
        ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at%[7]s
      MoneyWithdrawn: |
        INSERT INTO balances AS b (account_id, total, updated_at%[5]s)
        VALUES (@aggregate_id, -(@data->>'amount')::bigint, @created_at%[6]s)
        ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at%[7]s
    checks:
      - SELECT count(*) FROM balances
      - SELECT coalesce(sum(total), 0) FROM balances
`, topic, partitions, ordering, table, cols, vals, set)
}

// Event is a JSON envelope with kreplay's default field names.
type Event struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	AggregateID string    `json:"aggregate_id"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	Data        any       `json:"data"`
}

// Record encodes ev as the value of a record for topic/partition, keyed by its aggregate.
func Record(topic string, partition int32, ev Event) *kgo.Record {
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: topic, Partition: partition, Key: []byte(ev.AggregateID), Value: b, Timestamp: ev.CreatedAt}
}
