package topology_test

import (
	"fmt"
	"time"

	"github.com/kreplay/kreplay/topology"
)

func ExampleLoad() {
	// In the CLI, getenv is os.Getenv; here the environment sets the
	// database URL only.
	env := map[string]string{"DATABASE_URL": "postgres://app@db:5432/app"}
	cfg, err := topology.Load("testdata/kreplay.yaml", func(k string) string { return env[k] })
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("brokers:", cfg.Kafka.Brokers)
	fmt.Println("database:", cfg.Postgres.URL)
	fmt.Println("dead letters:", cfg.Kafka.DeadLetterTopic)

	p, _ := cfg.Projection("balances")
	fmt.Println("projection:", p.Name, p.Ordering, p.OnError, p.Sources)
	fmt.Println("batch size:", p.BatchSize, "idle timeout:", p.IdleTimeout)

	src, _ := cfg.Source("bank.accounts")
	fmt.Println("envelope:", src.Format, src.Fields.Type, src.Fields.Data)
	// Output:
	// brokers: [127.0.0.1:9092]
	// database: postgres://app@db:5432/app
	// dead letters: kreplay.dead_letter
	// projection: balances global fail [bank.accounts]
	// batch size: 2000 idle timeout: 1s
	// envelope: json type data
}

func ExampleConfig_Validate() {
	cfg, err := topology.Parse([]byte(`
sources:
  - topic: bank.accounts
projections:
  - name: balances
    sources: [bank.acounts]
    tables:
      - CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL)
    handlers:
      MoneyDeposited: UPDATE balances SET total = total + @amount WHERE account_id = @aggregate_id
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg.SetDefaults()
	fmt.Println(cfg.Validate())
	// Output:
	// projection "balances": source "bank.acounts" is not declared; add it under sources: (declared: bank.accounts)
	// projection "balances": handler "MoneyDeposited": unknown argument @amount (valid: @event_id, @type, @aggregate_id, @version, @created_at, @data, @topic, @partition, @offset)
}

func ExampleParse_unknownKey() {
	_, err := topology.Parse([]byte(`
projections:
  - name: balances
    handler:
      MoneyDeposited: SELECT 1
`))
	fmt.Println(err)
	// Output:
	// config line 4: unknown key "handler" (known keys here: name, ordering, on_error, sources, tables, handlers, checks, folds, reads, idle_timeout, max_lateness, batch_size, workers, allow_truncated_history); did you mean "handlers"?
}

func ExampleParseHandler() {
	h, err := topology.ParseHandler("MoneyDeposited", `
INSERT INTO balances AS b (account_id, total, updated_at)
VALUES (@aggregate_id, (@data->>'amount')::bigint, @created_at)
ON CONFLICT (account_id) DO UPDATE
SET total = b.total + EXCLUDED.total, updated_at = greatest(b.updated_at, @created_at)`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(h.Positional)
	for i, a := range h.Args {
		fmt.Printf("$%d = @%s\n", i+1, a.Name())
	}
	// Output:
	// INSERT INTO balances AS b (account_id, total, updated_at)
	// VALUES ($1, (($2::jsonb)->>'amount')::bigint, $3)
	// ON CONFLICT (account_id) DO UPDATE
	// SET total = b.total + EXCLUDED.total, updated_at = greatest(b.updated_at, $3)
	// $1 = @aggregate_id
	// $2 = @data
	// $3 = @created_at
}

func ExampleDefinition_Hash() {
	const config = `
sources: [{topic: bank.accounts}]
projections:
  - name: balances
    sources: [bank.accounts]
    tables:
      - CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL)
    handlers:
      MoneyDeposited: UPDATE balances SET total = total + (@data->>'amount')::bigint WHERE account_id = @aggregate_id
      MoneyWithdrawn: UPDATE balances SET total = total - (@data->>'amount')::bigint WHERE account_id = @aggregate_id
`
	hash := func(edit func(p *topology.Projection)) string {
		cfg, err := topology.Parse([]byte(config))
		if err != nil {
			panic(err)
		}
		cfg.SetDefaults()
		p, _ := cfg.Projection("balances")
		edit(p)
		d, err := cfg.Definition("balances")
		if err != nil {
			panic(err)
		}
		return d.Hash()
	}

	fmt.Println(hash(func(p *topology.Projection) {}))
	// Operational knobs do not change what the tables contain.
	fmt.Println(hash(func(p *topology.Projection) { p.BatchSize, p.Workers, p.IdleTimeout = 10, 2, time.Minute }))
	// A changed handler does.
	fmt.Println(hash(func(p *topology.Projection) {
		p.Handlers["MoneyWithdrawn"] = "DELETE FROM balances WHERE account_id = @aggregate_id"
	}))
	// Output:
	// sha256:cb33d0df3568148b0a0b3cc63675022df958a47f1ce60337fe96247c408fdd40
	// sha256:cb33d0df3568148b0a0b3cc63675022df958a47f1ce60337fe96247c408fdd40
	// sha256:b3f2a19c3cbcb578d8520d6aa3c8f6c26ac11428f4c58e1502d00d5ae6113a40
}

func ExampleNewDecoder() {
	dec, err := topology.NewDecoder(topology.Source{Topic: "bank.accounts"})
	if err != nil {
		fmt.Println(err)
		return
	}
	r := &topology.Record{
		Topic:     "bank.accounts",
		Partition: 2,
		Offset:    41,
		Key:       []byte("acc-7"),
		Timestamp: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		Value:     []byte(`{"id":"e-1","type":"MoneyDeposited","version":3,"data":{"amount":100}}`),
	}
	var ev topology.Event
	if err := dec.Decode(r, &ev); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.Type, ev.ID, ev.AggregateID, ev.Version, ev.CreatedAt.Format(time.RFC3339), string(ev.Data))

	r.Value = []byte(`{"id":"e-2","type":"MoneyDeposited","created_at":"yesterday"}`)
	fmt.Println(dec.Decode(r, &ev))
	// Output:
	// MoneyDeposited e-1 acc-7 3 2024-01-02T03:04:05Z {"amount":100}
	// decode topic "bank.accounts" partition 2 offset 41: field "created_at": want an RFC 3339 time such as "2006-01-02T15:04:05.999999999Z", got "yesterday"
}
