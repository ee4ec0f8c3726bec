package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/kreplay/kreplay/processor/projector"
)

// The read model of this program: the balance of every bank account, kept by Go code.

// movement is the payload of MoneyDeposited and MoneyWithdrawn.
type movement struct {
	Amount int64 `json:"amount"`
}

// signed is an event's effect on its account's balance.
func signed(ev *projector.Event) (int64, error) {
	var m movement
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		return 0, err // the event's fault: the projection's on_error decides
	}
	if m.Amount <= 0 {
		return 0, fmt.Errorf("amount %d: not positive", m.Amount)
	}
	if ev.Type == "MoneyWithdrawn" {
		return -m.Amount, nil
	}
	return m.Amount, nil
}

// balancesV1 is version 1 of the projector: each account's balance. Its handlers are pipelined:
// they compute in Go and queue a statement, and kreplay sends the statements of a whole batch in
// one round trip, in the transaction that moves the checkpoint.
func balancesV1() *projector.Projector {
	apply := projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
		amount, err := signed(ev)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO balances AS b (account_id, total, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at`,
			ev.AggregateID, amount, ev.CreatedAt)
		return nil
	})
	return &projector.Projector{
		Name:    "balances",
		Version: "1",
		Sources: []string{topic},
		Tables: []string{
			"CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL)",
		},
		Checks:   []string{"SELECT count(*) FROM balances", "SELECT coalesce(sum(total), 0) FROM balances"},
		Handlers: map[string]projector.Handler{"MoneyDeposited": apply, "MoneyWithdrawn": apply},
	}
}

// balancesV2 is version 2: a changed handler that also counts each account's events and keeps
// its largest deposit. A new Version, so a new definition: it is rolled out as a replay.
func balancesV2() *projector.Projector {
	apply := projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
		amount, err := signed(ev)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO balances AS b (account_id, total, updated_at, events, largest_deposit) VALUES ($1, $2::bigint, $3, 1, greatest($2::bigint, 0))
			ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at,
				events = b.events + 1, largest_deposit = greatest(b.largest_deposit, EXCLUDED.largest_deposit)`,
			ev.AggregateID, amount, ev.CreatedAt)
		return nil
	})
	p := balancesV1()
	p.Version = "2"
	p.Tables = []string{`CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL,
		events bigint NOT NULL, largest_deposit bigint NOT NULL)`}
	p.Checks = append(p.Checks, "SELECT coalesce(sum(total) FILTER (WHERE total < 0), 0) FROM balances")
	p.Handlers = map[string]projector.Handler{"MoneyDeposited": apply, "MoneyWithdrawn": apply}
	return p
}

// notifier is a reactor: it would tell each account holder about each movement (a push
// notification, say). Here it remembers which events it was handed, so that the program can
// check that it ran once per live event and never for what a replay applied.
type notifier struct {
	mu   sync.Mutex
	seen map[string]int // event id -> reactions
}

func (n *notifier) reactor() *projector.Reactor {
	return &projector.Reactor{
		Name:       "notifier",
		Projection: "balances",
		EventTypes: []string{"MoneyDeposited", "MoneyWithdrawn"},
		React: func(_ context.Context, ev *projector.Event) error {
			n.mu.Lock()
			defer n.mu.Unlock()
			n.seen[ev.ID]++ // a real notifier would send here, deduplicating by ev.ID
			return nil
		},
	}
}

// reactions returns how often each event was reacted to.
func (n *notifier) reactions() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.seen))
	for k, v := range n.seen {
		out[k] = v
	}
	return out
}
