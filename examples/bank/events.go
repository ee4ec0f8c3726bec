package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// bank generates the event history of bank accounts (MoneyDeposited, MoneyWithdrawn, keyed by
// account, JSON envelopes with kreplay's default field names) and keeps what they imply, to
// check the read model against.
type bank struct {
	mu       sync.Mutex
	cl       *kgo.Client
	rnd      *rand.Rand
	accounts int
	n        int
	versions map[string]int64
	balances map[string]int64
	counts   map[string]int64
	largest  map[string]int64
	ids      []string // every event's id, in the order produced
}

func newBank(cl *kgo.Client, accounts int) *bank {
	return &bank{cl: cl, rnd: rand.New(rand.NewPCG(2026, 15)), accounts: accounts,
		versions: map[string]int64{}, balances: map[string]int64{}, counts: map[string]int64{}, largest: map[string]int64{}}
}

type envelope struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	AggregateID string    `json:"aggregate_id"`
	Version     int64     `json:"version"`
	CreatedAt   time.Time `json:"created_at"`
	Data        movement  `json:"data"`
}

// produce writes n events and returns their ids.
func (b *bank) produce(ctx context.Context, n int) ([]string, error) {
	b.mu.Lock()
	recs := make([]*kgo.Record, 0, n)
	ids := make([]string, 0, n)
	for range n {
		b.n++
		acct := fmt.Sprintf("acct-%04d", b.rnd.IntN(b.accounts))
		b.versions[acct]++
		ev := envelope{ID: fmt.Sprintf("ev-%d", b.n), Type: "MoneyDeposited", AggregateID: acct, Version: b.versions[acct],
			CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(b.n) * time.Millisecond),
			Data:      movement{Amount: int64(1 + b.rnd.IntN(100))}}
		if b.rnd.IntN(10) < 3 {
			ev.Type = "MoneyWithdrawn"
			b.balances[acct] -= ev.Data.Amount
		} else {
			b.balances[acct] += ev.Data.Amount
			b.largest[acct] = max(b.largest[acct], ev.Data.Amount)
		}
		b.counts[acct]++
		v, err := json.Marshal(ev)
		if err != nil {
			b.mu.Unlock()
			return nil, err
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(acct), Value: v, Timestamp: ev.CreatedAt})
		ids = append(ids, ev.ID)
		b.ids = append(b.ids, ev.ID)
	}
	b.mu.Unlock()
	return ids, b.cl.ProduceSync(ctx, recs...).FirstErr()
}

// implied returns what the events so far imply: balances, events and largest deposit per account.
func (b *bank) implied() (balances, counts, largest map[string]int64, total int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	clone := func(m map[string]int64) map[string]int64 {
		out := make(map[string]int64, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	return clone(b.balances), clone(b.counts), clone(b.largest), b.n
}
