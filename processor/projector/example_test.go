package projector_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// The examples run against the test PostgreSQL server (KREPLAY_TEST_DATABASE_URL, a database of
// their own) and kfake, the Kafka protocol in process.

// A pipelined handler computes in Go and queues statements: the fast path.
func ExamplePipelined() {
	env := newExample("bank.accounts")
	defer env.close()
	env.produce(`{"id": "e1", "type": "MoneyDeposited", "aggregate_id": "acct-1", "data": {"amount": 100, "currency": "EUR"}}`,
		`{"id": "e2", "type": "MoneyDeposited", "aggregate_id": "acct-2", "data": {"amount": 5000, "currency": "JPY"}}`,
		`{"id": "e3", "type": "MoneyWithdrawn", "aggregate_id": "acct-1", "data": {"amount": 30, "currency": "EUR"}}`)

	toCents := map[string]int64{"EUR": 100, "JPY": 1} // what SQL alone would make awkward
	move := func(sign int64) projector.Handler {
		return projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
			var d struct {
				Amount   int64
				Currency string
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return err
			}
			cents, ok := toCents[d.Currency]
			if !ok {
				return fmt.Errorf("unknown currency %q", d.Currency) // the event's fault: on_error decides
			}
			b.Queue(`INSERT INTO balances AS b (account_id, cents) VALUES ($1, $2)
				ON CONFLICT (account_id) DO UPDATE SET cents = b.cents + EXCLUDED.cents`, ev.AggregateID, sign*d.Amount*cents)
			b.Queue(`INSERT INTO movements (event_id, account_id, cents) VALUES ($1, $2, $3)`, ev.ID, ev.AggregateID, sign*d.Amount*cents)
			return nil
		})
	}
	balances := &projector.Projector{
		Name: "balances", Version: "1", Sources: []string{"bank.accounts"},
		Tables: []string{
			"CREATE TABLE balances (account_id text PRIMARY KEY, cents bigint NOT NULL)",
			"CREATE TABLE movements (event_id text PRIMARY KEY, account_id text NOT NULL, cents bigint NOT NULL)",
		},
		Checks:   []string{"SELECT coalesce(sum(cents), 0) FROM balances"},
		Handlers: map[string]projector.Handler{"MoneyDeposited": move(1), "MoneyWithdrawn": move(-1)},
	}
	env.run(processor.Options{Projectors: []*projector.Projector{balances}}, "balances_v1", func() {
		env.print("SELECT account_id, cents FROM public.balances ORDER BY account_id")
		env.print("SELECT count(*) FROM public.movements")
	})
	// Output:
	// acct-1 7000
	// acct-2 5000
	// 3
}

// A transactional handler reads what the events before it wrote, in the batch's transaction.
func ExampleTransactional() {
	env := newExample("bank.accounts")
	defer env.close()
	env.produce(`{"id": "e1", "type": "MoneyDeposited", "aggregate_id": "acct-1", "data": {"amount": 100}}`,
		`{"id": "e2", "type": "MoneyWithdrawn", "aggregate_id": "acct-1", "data": {"amount": 150}}`,
		`{"id": "e3", "type": "MoneyWithdrawn", "aggregate_id": "acct-1", "data": {"amount": 40}}`)

	// A withdrawal is refused when the balance does not cover it: read, decide, write.
	withdraw := projector.Transactional(func(ctx context.Context, tx pgx.Tx, ev *projector.Event) error {
		var d struct{ Amount int64 }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		var total int64
		err := tx.QueryRow(ctx, "SELECT total FROM accounts WHERE account_id = $1 FOR UPDATE", ev.AggregateID).Scan(&total)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if total < d.Amount {
			_, err = tx.Exec(ctx, "INSERT INTO refused (event_id, account_id, amount) VALUES ($1, $2, $3)", ev.ID, ev.AggregateID, d.Amount)
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE accounts SET total = total - $2 WHERE account_id = $1", ev.AggregateID, d.Amount)
		return err
	})
	deposit := projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
		var d struct{ Amount int64 }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		b.Queue(`INSERT INTO accounts AS a VALUES ($1, $2) ON CONFLICT (account_id) DO UPDATE SET total = a.total + EXCLUDED.total`, ev.AggregateID, d.Amount)
		return nil
	})
	accounts := &projector.Projector{
		Name: "accounts", Version: "1", Sources: []string{"bank.accounts"},
		Tables: []string{
			"CREATE TABLE accounts (account_id text PRIMARY KEY, total bigint NOT NULL)",
			"CREATE TABLE refused (event_id text PRIMARY KEY, account_id text NOT NULL, amount bigint NOT NULL)",
		},
		Handlers: map[string]projector.Handler{"MoneyDeposited": deposit, "MoneyWithdrawn": withdraw},
	}
	env.run(processor.Options{Projectors: []*projector.Projector{accounts}}, "accounts_v1", func() {
		env.print("SELECT account_id, total FROM public.accounts")
		env.print("SELECT event_id, amount FROM public.refused")
	})
	// Output:
	// acct-1 60
	// e2 150
}

// A reactor runs for the events the live version commits, never for the history it replays.
func ExampleReactor() {
	env := newExample("shop.orders")
	defer env.close()
	env.produce(`{"id": "o1", "type": "OrderPlaced", "aggregate_id": "order-1", "data": {"email": "ada@example.com"}}`)

	orders := &projector.Projector{
		Name: "orders", Version: "1", Sources: []string{"shop.orders"},
		Tables: []string{"CREATE TABLE orders (order_id text PRIMARY KEY, email text NOT NULL)"},
		Handlers: map[string]projector.Handler{"OrderPlaced": projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
			b.Queue("INSERT INTO orders VALUES ($1, $2::jsonb->>'email')", ev.AggregateID, ev.Data)
			return nil
		})},
	}
	var mu sync.Mutex
	var sent []string
	confirm := &projector.Reactor{Name: "confirmation-email", Projection: "orders", EventTypes: []string{"OrderPlaced"},
		React: func(_ context.Context, ev *projector.Event) error {
			var d struct{ Email string }
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return nil // nothing to send: give up on this event
			}
			mu.Lock()
			defer mu.Unlock()
			sent = append(sent, fmt.Sprintf("email %s about %s (event %s)", d.Email, ev.AggregateID, ev.ID))
			return nil
		}}
	env.run(processor.Options{Projectors: []*projector.Projector{orders}, Reactors: []*projector.Reactor{confirm}}, "orders_v1", func() {
		// order-1 was history when orders_v1 bootstrapped: no email. order-2 is live.
		env.produce(`{"id": "o2", "type": "OrderPlaced", "aggregate_id": "order-2", "data": {"email": "bob@example.com"}}`)
		env.waitFor(func() bool { mu.Lock(); defer mu.Unlock(); return len(sent) == 1 })
		time.Sleep(300 * time.Millisecond) // a second email would come now
		mu.Lock()
		for _, s := range sent {
			fmt.Println(s)
		}
		mu.Unlock()
		env.print("SELECT count(*) FROM public.orders")
	})
	// Output:
	// email bob@example.com about order-2 (event o2)
	// 2
}

// example is a kfake cluster with one topic, and a database of its own.
type example struct {
	topic    string
	cluster  *kfake.Cluster
	client   *kgo.Client
	db       *pgx.Conn
	database string
	dbURL    string
	produced int64
}

func newExample(topic string) *example {
	ctx := context.Background()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	must(err)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(0), kgo.DefaultProduceTopic(topic))
	must(err)
	var b [5]byte
	_, _ = rand.Read(b[:])
	e := &example{topic: topic, cluster: c, client: cl, database: "kreplay_example_" + hex.EncodeToString(b[:])}
	admin, err := pgx.Connect(ctx, storetest.ServerURL())
	must(err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+e.database)
	must(err)
	u, err := url.Parse(storetest.ServerURL())
	must(err)
	u.Path = "/" + e.database
	e.dbURL = u.String()
	e.db, err = pgx.Connect(ctx, e.dbURL)
	must(err)
	return e
}

// produce writes events (JSON envelopes; created_at is added) to the topic.
func (e *example) produce(events ...string) {
	for _, ev := range events {
		var m map[string]any
		must(json.Unmarshal([]byte(ev), &m))
		m["created_at"] = time.Date(2026, 1, 1, 0, 0, int(e.produced), 0, time.UTC)
		v, err := json.Marshal(m)
		must(err)
		must(e.client.ProduceSync(context.Background(), &kgo.Record{Value: v}).FirstErr())
		e.produced++
	}
}

// run serves with the options until the version has applied everything produced, calls then, and
// stops.
func (e *example) run(opts processor.Options, key string, then func()) {
	cfg, err := topology.Parse([]byte("http:\n  listen: \"off\"\n"))
	must(err)
	cfg.Kafka.Brokers = e.cluster.ListenAddrs()
	cfg.Postgres.URL = e.dbURL
	cfg.SetDefaults()
	p := processor.New(cfg, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		must(<-done)
	}()
	select {
	case <-p.Started():
	case err := <-done:
		must(err)
	}
	e.waitFor(func() bool {
		var next int64
		err := e.db.QueryRow(ctx, "SELECT coalesce(sum(next_offset), 0) FROM kreplay.checkpoints WHERE version = $1", key).Scan(&next)
		return err == nil && next == e.produced
	})
	then()
}

func (e *example) waitFor(cond func() bool) {
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			panic("the example did not get there in a minute")
		}
	}
}

// print prints each row of a query, its columns separated by a space.
func (e *example) print(sql string) {
	rows, err := e.db.Query(context.Background(), sql)
	must(err)
	for rows.Next() {
		vals, err := rows.Values()
		must(err)
		for i, v := range vals {
			if i > 0 {
				fmt.Print(" ")
			}
			fmt.Print(v)
		}
		fmt.Println()
	}
	must(rows.Err())
}

func (e *example) close() {
	e.client.Close()
	e.cluster.Close()
	_ = e.db.Close(context.Background())
	must(store.DropDatabase(context.Background(), storetest.ServerURL(), e.database))
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
