package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// newBank is the workload generator: the same seed gives the same events, so that scenarios
// that cannot share records (the ones without Kafka) regenerate exactly the same history.
func newBank(topic string, seed uint64) *bankgen.Bank {
	return bankgen.New(topic, bankPartitions, bankAccounts, seed)
}

// projectionYAML is a kreplay config for the bank workload with projection name reading topic
// into table: the balance of every account, as in kafkatest.BankConfig but with names of our
// own so that the runs do not clash. brokers and dbURL may be empty (the baselines only use the
// projection).
func projectionYAML(brokers []string, dbURL, topic, name, table, ordering string) string {
	var b strings.Builder
	if len(brokers) > 0 {
		fmt.Fprintf(&b, "kafka:\n  brokers: [%s]\n", quoteList(brokers))
	}
	if dbURL != "" {
		fmt.Fprintf(&b, "postgres:\n  url: %q\n", dbURL)
		// Every scenario has a catalog of its own on the one kfake cluster: an installation of
		// its own too, or the next one's serve refuses the control and status topics.
		if u, err := url.Parse(dbURL); err == nil && strings.Trim(u.Path, "/") != "" {
			fmt.Fprintf(&b, "installation: %s\n", strings.Trim(u.Path, "/"))
		}
	}
	fmt.Fprintf(&b, `http:
  listen: "off"
sources:
  - topic: %[1]s
    partitions: %[2]d
projections:
  - name: %[3]s
    ordering: %[4]s
    sources: [%[1]s]
    tables:
      - CREATE TABLE %[5]s (account_id text PRIMARY KEY, total bigint NOT NULL, updated_at timestamptz NOT NULL)
    handlers:
      MoneyDeposited: |
        INSERT INTO %[5]s AS b (account_id, total, updated_at)
        VALUES (@aggregate_id, (@data->>'amount')::bigint, @created_at)
        ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at
      MoneyWithdrawn: |
        INSERT INTO %[5]s AS b (account_id, total, updated_at)
        VALUES (@aggregate_id, -(@data->>'amount')::bigint, @created_at)
        ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total, updated_at = EXCLUDED.updated_at
    checks:
      - SELECT count(*) FROM %[5]s
      - SELECT coalesce(sum(total), 0) FROM %[5]s
`, topic, bankPartitions, name, ordering, table)
	return b.String()
}

// foldYAML is projectionYAML with the handlers replaced by a fold: the same balances, maintained
// set-based (one pre-aggregated upsert per batch), with large batches.
func foldYAML(brokers []string, dbURL, topic, name, table string, batch int) string {
	base := projectionYAML(brokers, dbURL, topic, name, table, "global")
	i, j := strings.Index(base, "    handlers:\n"), strings.Index(base, "    checks:\n")
	return base[:i] + fmt.Sprintf(`    batch_size: %[2]d
    folds:
      - table: %[1]s
        events: [MoneyDeposited, MoneyWithdrawn]
        key: {account_id: "@aggregate_id"}
        columns:
          total: {sum: "CASE @type WHEN 'MoneyDeposited' THEN (@data->>'amount')::bigint ELSE -(@data->>'amount')::bigint END"}
          updated_at: {last: "@created_at"}
`, table, batch) + base[j:]
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// parseConfig parses, completes and validates a config as serve would (without the
// environment: the bench decides the brokers and the database).
func parseConfig(yaml string) (*topology.Config, error) { return topology.FromYAML([]byte(yaml)) }

// workload is a projection's tables, handlers and decoder, outside kreplay: what the baselines
// execute.
type workload struct {
	tables   []string
	handlers map[string]topology.Handler
	decoder  topology.Decoder
}

func newWorkload(topic, table string) (*workload, error) {
	cfg, err := parseConfig(projectionYAML(nil, "", topic, "bench_"+table, table, "global"))
	if err != nil {
		return nil, err
	}
	def, err := cfg.Definition(cfg.Projections[0].Name)
	if err != nil {
		return nil, err
	}
	hs, err := def.ParseHandlers()
	if err != nil {
		return nil, err
	}
	src, _ := cfg.Source(topic)
	dec, err := topology.NewDecoder(*src)
	if err != nil {
		return nil, err
	}
	return &workload{tables: def.Tables, handlers: hs, decoder: dec}, nil
}

// statement is the handler statement of an event and its arguments, as kreplay's applier
// passes them.
func (w *workload) statement(ev *topology.Event) (string, []any, error) {
	h, ok := w.handlers[ev.Type]
	if !ok {
		return "", nil, fmt.Errorf("no handler for event type %q", ev.Type)
	}
	args := make([]any, len(h.Args))
	for i, a := range h.Args {
		args[i] = ev.Arg(a)
	}
	return h.Positional, args, nil
}

// argValue mirrors store's applier: the value of a handler argument for an event.

// decodeAll decodes generated records (they carry no offsets: the decoder only needs the value).
func (w *workload) decodeAll(recs []*kgo.Record) ([]topology.Event, error) {
	evs := make([]topology.Event, len(recs))
	var tr topology.Record
	for i, r := range recs {
		if err := w.decoder.Decode(kafkaconn.Record(r, &tr), &evs[i]); err != nil {
			return nil, err
		}
	}
	return evs, nil
}

// database is a database of its own for one scenario, on the bench's server.
type database struct {
	name     string
	url      string
	adminURL string
	keep     bool
}

// createDatabase creates bench_<random> on the server of adminURL.
func createDatabase(ctx context.Context, adminURL string, keep bool) (*database, error) {
	var rnd [5]byte
	_, _ = rand.Read(rnd[:])
	name := "bench_" + hex.EncodeToString(rnd[:])
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	u.Path = "/" + name
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u.Host, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	trackFunctions(ctx, adminURL, name) // kreplay.advance's calls and time (pgstats.go)
	return &database{name: name, url: u.String(), adminURL: adminURL, keep: keep}, nil
}

// drop drops the database unless -keep.
func (d *database) drop() {
	if d == nil {
		return
	}
	if d.keep {
		progress("kept database %s", d.name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// With the roles of its catalog: roles are the server's, and would outlive the database.
	if err := store.DropDatabase(ctx, d.adminURL, d.name); err != nil {
		progress("drop database %s: %v", d.name, err)
	}
}

// compareBalances reads account_id, total from table (schema-qualified or not) and compares
// them with want for every account: exact means the same accounts and the same totals.
func compareBalances(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, table string, want map[string]int64) (bool, string, error) {
	rows, err := q.Query(ctx, "SELECT account_id, total FROM "+table)
	if err != nil {
		return false, "", fmt.Errorf("read %s: %w", table, err)
	}
	got := map[string]int64{}
	for rows.Next() {
		var a string
		var v int64
		if err := rows.Scan(&a, &v); err != nil {
			rows.Close()
			return false, "", err
		}
		got[a] = v
	}
	if err := rows.Err(); err != nil {
		return false, "", err
	}
	var bad []string
	for a, v := range want {
		if g, ok := got[a]; !ok {
			bad = append(bad, fmt.Sprintf("%s missing (want %d)", a, v))
		} else if g != v {
			bad = append(bad, fmt.Sprintf("%s = %d, want %d", a, g, v))
		}
	}
	for a, g := range got {
		if _, ok := want[a]; !ok {
			bad = append(bad, fmt.Sprintf("%s = %d, not expected", a, g))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return false, fmt.Sprintf("%d of %d accounts differ: %s", len(bad), len(want), strings.Join(bad[:min(len(bad), 5)], "; ")), nil
	}
	return true, fmt.Sprintf("%d accounts exact", len(want)), nil
}

// cluster is the in-process Kafka (kfake) and a producer on it.
type cluster struct {
	kc       *kfake.Cluster
	addrs    []string
	producer *kgo.Client
}

func newCluster() (*cluster, error) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(bankPartitions, bankTopic), kfake.SeedTopics(bankPartitions, promoTopic))
	if err != nil {
		return nil, fmt.Errorf("kfake: %w", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MaxBufferedRecords(2*chunkSize))
	if err != nil {
		kc.Close()
		return nil, fmt.Errorf("kgo: %w", err)
	}
	return &cluster{kc: kc, addrs: kc.ListenAddrs(), producer: cl}, nil
}

func (c *cluster) close() {
	c.producer.Close()
	c.kc.Close()
}

// produce generates n events with bank and produces them, chunk by chunk, so that only one
// chunk of records is in the bench's memory at a time (the broker keeps them all).
func (c *cluster) produce(ctx context.Context, bank *bankgen.Bank, n int) error {
	for done := 0; done < n; {
		k := min(chunkSize, n-done)
		if err := c.producer.ProduceSync(ctx, bank.Events(k)...).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
		done += k
	}
	return nil
}
