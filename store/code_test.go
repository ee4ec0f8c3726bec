package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// goHandlers is a store.CodeHandlers of functions, as package projector makes them.
type goHandlers struct {
	pipelined     map[string]func(q *store.StatementQueue, ev *topology.Event) error
	transactional map[string]func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error
}

func (g goHandlers) Style(t string) store.CodeStyle {
	switch {
	case g.pipelined[t] != nil:
		return store.CodePipelined
	case g.transactional[t] != nil:
		return store.CodeTransactional
	}
	return store.CodeNone
}

func (g goHandlers) Queue(q *store.StatementQueue, ev *topology.Event) error {
	return g.pipelined[ev.Type](q, ev)
}

func (g goHandlers) Run(ctx context.Context, tx pgx.Tx, ev *topology.Event) error {
	return g.transactional[ev.Type](ctx, tx, ev)
}

func amount(ev *topology.Event) (int64, error) {
	var d struct{ Amount int64 }
	err := json.Unmarshal(ev.Data, &d)
	return d.Amount, err
}

// codeDefinition is accountsYAML's projection with Go handlers for Deposited and Named.
func codeDefinition(t *testing.T) topology.Definition {
	t.Helper()
	def := definition(t, accountsYAML)
	def.Handlers = nil
	def.Code = &topology.Code{Version: "1", EventTypes: []string{"Deposited", "Named"}}
	require.NoError(t, def.Validate())
	return def
}

// Go handlers run in the batch's transaction, with its checkpoint, on the version's connection: a
// pipelined one queues statements in the pipeline, a transactional one reads what the events
// before it wrote. An event's own fault (a Go error, a constraint) rolls the whole batch back and
// names the event; ErrRetry, a failure PostgreSQL does not blame on the event, and a handler
// that swallows a failed statement are the environment's (retried, never skipped); a handler
// cannot end the batch's transaction.
func TestGoHandlersRunInTheBatchTransaction(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	def := codeDefinition(t)
	_, err := s.CreateVersion(ctx, store.NewVersion{Key: "accounts_v1", Definition: def, Live: true,
		Start: []store.PartitionStart{{Topic: "bank", Partition: 0, Target: 100}, {Topic: "bank", Partition: 1, Target: 100}}})
	require.NoError(t, err)
	tps := []store.TopicPartition{{Topic: "bank", Partition: 0}, {Topic: "bank", Partition: 1}}
	_, err = s.Claim(ctx, "accounts_v1", 1, "m", tps, false)
	require.NoError(t, err)

	var named func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error
	code := goHandlers{
		pipelined: map[string]func(*store.StatementQueue, *topology.Event) error{
			"Deposited": func(q *store.StatementQueue, ev *topology.Event) error {
				n, err := amount(ev)
				if err != nil {
					return err
				}
				q.Queue(`INSERT INTO balances AS b VALUES ($1, $2) ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total`, ev.AggregateID, n)
				q.Queue(`INSERT INTO audit (event_id) VALUES ($1)`, ev.ID)
				return nil
			},
		},
		transactional: map[string]func(context.Context, pgx.Tx, *topology.Event) error{
			"Named": func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error { return named(ctx, tx, ev) },
		},
	}
	// The name records the balance it sees: the deposits before it in the batch are visible.
	named = func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error {
		var total int64
		if err := tx.QueryRow(ctx, "SELECT coalesce((SELECT total FROM balances WHERE account_id = $1), 0)", ev.AggregateID).Scan(&total); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO owners VALUES ($1, $2) ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name", ev.AggregateID, string(ev.Data)+" at "+jsonInt(total))
		return err
	}
	_, err = s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: def})
	require.ErrorContains(t, err, "its handlers are Go code (projector accounts version 1), and none was given")
	a, err := s.NewApplier(store.ApplierConfig{Key: "accounts_v1", Definition: def, Code: code})
	require.NoError(t, err)
	defer a.Close(ctx)

	res, err := a.Apply(ctx, 1, []store.Item{
		item("Deposited", "x", `{"amount": 10}`, 0, 0),
		item("Deposited", "x", `{"amount": 5}`, 0, 1),
		item("Named", "x", `"Ada"`, 0, 2),
		item("Deposited", "x", `{"amount": 1}`, 0, 3),
		item("Unhandled", "x", `{}`, 1, 0),
	})
	require.NoError(t, err)
	require.Equal(t, 4, res.Handled)
	require.Equal(t, int64(16), scalar(t, s, "SELECT total FROM accounts_v1.balances WHERE account_id = 'x'"))
	require.Equal(t, int64(3), scalar(t, s, "SELECT count(*) FROM accounts_v1.audit"))
	var owner string
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT name FROM accounts_v1.owners WHERE account_id = 'x'").Scan(&owner))
	require.Equal(t, `"Ada" at 15`, owner, "the transactional handler saw the two deposits before it")

	balance := func() int64 { return scalar(t, s, "SELECT total FROM accounts_v1.balances WHERE account_id = 'x'") }
	next := func() int64 {
		return scalar(t, s, "SELECT next_offset FROM kreplay.checkpoints WHERE version = 'accounts_v1' AND partition = 0")
	}
	batch := func(last store.Item) []store.Item {
		return []store.Item{item("Deposited", "x", `{"amount": 100}`, 0, 4), item("Named", "x", `"Bob"`, 0, 5), last}
	}

	// A Go error of a pipelined handler: the event's fault.
	_, err = a.Apply(ctx, 1, batch(item("Deposited", "x", `not json`, 0, 6)))
	var herr *store.HandlerError
	require.ErrorAs(t, err, &herr)
	require.Equal(t, 2, herr.Index)
	require.ErrorContains(t, err, `handler "Deposited": invalid character`)
	require.Equal(t, int64(16), balance())
	require.Equal(t, int64(4), next())

	// A constraint refused in a transactional handler: the event's fault, everything rolled back.
	named = func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error {
		_, err := tx.Exec(ctx, "INSERT INTO balances VALUES ($1, 2000000)", "y") // violates the CHECK
		return err
	}
	_, err = a.Apply(ctx, 1, batch(item("Deposited", "x", `{"amount": 1}`, 0, 6)))
	require.ErrorAs(t, err, &herr)
	require.Equal(t, 1, herr.Index)
	require.ErrorContains(t, err, "balances_total_check")
	require.Equal(t, int64(16), balance())

	for name, fn := range map[string]func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error{
		"ErrRetry": func(context.Context, pgx.Tx, *topology.Event) error {
			return errors.Join(errors.New("rates service down"), store.ErrRetry)
		},
		"an error PostgreSQL does not blame on the event": func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error {
			_, err := tx.Exec(ctx, "INSERT INTO renamed_away VALUES (1)")
			return err
		},
		"a failed statement swallowed": func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error {
			_, _ = tx.Exec(ctx, "SELECT 1/0")
			return nil
		},
	} {
		named = fn
		_, err = a.Apply(ctx, 1, batch(item("Deposited", "x", `{"amount": 1}`, 0, 6)))
		require.Error(t, err, name)
		require.False(t, errors.As(err, &herr), "%s is not the event's fault: %v", name, err)
		require.Equal(t, int64(16), balance(), name)
		require.Equal(t, int64(4), next(), name)
	}

	// tx.Commit is refused: a mistake of the handler's code, so the event's fault.
	named = func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error { return tx.Commit(ctx) }
	_, err = a.Apply(ctx, 1, batch(item("Deposited", "x", `{"amount": 1}`, 0, 6)))
	require.ErrorAs(t, err, &herr)
	require.ErrorContains(t, err, "a handler may not end the batch's transaction")
	require.Equal(t, int64(16), balance())

	// COMMIT through SQL ends the batch's transaction: the version must fail, whatever on_error.
	named = func(ctx context.Context, tx pgx.Tx, ev *topology.Event) error {
		_, err := tx.Exec(ctx, "COMMIT")
		return err
	}
	_, err = a.Apply(ctx, 1, []store.Item{item("Named", "x", `"Eve"`, 0, 4)})
	require.ErrorIs(t, err, store.ErrTransactionEnded)

	// A pipelined handler cannot queue one.
	code.pipelined["Deposited"] = func(q *store.StatementQueue, ev *topology.Event) error {
		q.Queue("  commit")
		return nil
	}
	_, err = a.Apply(ctx, 1, []store.Item{item("Deposited", "x", `{}`, 0, 5)})
	require.ErrorAs(t, err, &herr)
	require.ErrorContains(t, err, "queued COMMIT")
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
