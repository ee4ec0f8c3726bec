package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// env returns a getenv over the given variables.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// setup returns a valid config, defaults applied, for tests to break.
func setup(t *testing.T) *Config {
	t.Helper()
	c, err := Load("testdata/kreplay.yaml", env(nil))
	require.NoError(t, err)
	return c
}

func TestLoadDesignSample(t *testing.T) {
	t.Parallel()
	c := setup(t)

	require.Equal(t, []string{"127.0.0.1:9092"}, c.Kafka.Brokers)
	require.Equal(t, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", c.Postgres.URL)
	require.Equal(t, "public", c.Postgres.LiveSchema)
	require.Equal(t, ":9464", c.HTTP.Listen)

	src, ok := c.Source("bank.accounts")
	require.True(t, ok)
	require.Equal(t, Source{Topic: "bank.accounts", Format: FormatJSON, Fields: defaultFieldNames, Partitions: 8}, *src)

	p, ok := c.Projection("balances")
	require.True(t, ok)
	require.Equal(t, OrderingGlobal, p.Ordering)
	require.Equal(t, OnErrorFail, p.OnError)
	require.Equal(t, []string{"bank.accounts"}, p.Sources)
	require.Len(t, p.Tables, 1)
	require.Contains(t, p.Handlers["MoneyDeposited"], "ON CONFLICT (account_id)")
	require.Equal(t, []string{"SELECT count(*) FROM balances", "SELECT coalesce(sum(total), 0) FROM balances"}, p.Checks)

	_, ok = c.Projection("nope")
	require.False(t, ok)
	_, ok = c.Source("nope")
	require.False(t, ok)
}

func TestLoadFull(t *testing.T) {
	t.Parallel()
	c, err := Load("testdata/full.yaml", env(nil))
	require.NoError(t, err)

	require.Equal(t, KafkaConfig{
		Brokers:          []string{"kafka-1:9092", "kafka-2:9092"},
		EmbeddedListen:   "127.0.0.1:19092",
		ClientID:         "kreplay-test",
		ControlTopic:     "ops.control",
		StatusTopic:      "ops.status",
		DeadLetterTopic:  "ops.dead_letter",
		SessionTimeout:   30 * time.Second,
		RebalanceTimeout: 90 * time.Second,
		TLS: TLSConfig{
			Enabled:    true,
			CAFile:     "/etc/kreplay/ca.pem",
			CertFile:   "/etc/kreplay/client.pem",
			KeyFile:    "/etc/kreplay/client.key",
			ServerName: "kafka.internal",
		},
		SASL: SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "kreplay", Password: "from-file"},
	}, c.Kafka)
	require.Equal(t, PostgresConfig{
		URL:         "postgres://kreplay@db:5432/app",
		LiveSchema:  "read_models",
		MaxConns:    16,
		LockTimeout: 250 * time.Millisecond,
		ReaderRole:  "app_reader",
	}, c.Postgres)
	require.Equal(t, HTTPConfig{Listen: "127.0.0.1:9000"}, c.HTTP)
	require.Equal(t, ControlConfig{Secret: "s3cret", StatusInterval: 5 * time.Second}, c.Control)
	require.Equal(t, []Source{
		{Topic: "bank.accounts", Format: FormatJSON, Partitions: 3, Fields: FieldNames{
			ID: "eventId", Type: "eventType", AggregateID: "accountId", Version: "seq", CreatedAt: "occurredAt", Data: "payload",
		}},
		{Topic: "bank.transfers", Format: FormatCloudEvents, Partitions: 8},
	}, c.Sources)

	p := c.Projections[0]
	require.Equal(t, OrderingPartition, p.Ordering)
	require.Equal(t, OnErrorDeadLetter, p.OnError)
	require.Equal(t, 500*time.Millisecond, p.IdleTimeout)
	require.Equal(t, 500, p.BatchSize)
	require.Equal(t, 8, p.Workers)
	require.True(t, p.AllowTruncatedHistory)
	require.Equal(t, "INSERT INTO balances (account_id, total) VALUES (@aggregate_id, (@data->>'amount')::bigint) ON CONFLICT (account_id) DO UPDATE SET total = balances.total + EXCLUDED.total", p.Handlers["MoneyDeposited"])
}

func TestSetDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
sources:
  - topic: a
  - topic: b
    format: cloudevents
projections:
  - name: p
`))
	require.NoError(t, err)
	c.SetDefaults()

	oneSecond := time.Second
	require.Equal(t, Config{
		Installation: "kreplay",
		Kafka: KafkaConfig{
			Brokers:          []string{"127.0.0.1:9092"},
			EmbeddedListen:   "127.0.0.1:9092",
			ClientID:         "kreplay",
			ControlTopic:     "kreplay.control",
			StatusTopic:      "kreplay.status",
			DeadLetterTopic:  "kreplay.dead_letter",
			SessionTimeout:   45 * time.Second,
			RebalanceTimeout: 60 * time.Second,
		},
		Postgres: PostgresConfig{
			URL:         "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
			LiveSchema:  "public",
			MaxConns:    8,
			LockTimeout: 200 * time.Millisecond,
		},
		HTTP:    HTTPConfig{Listen: ":9464"},
		Control: ControlConfig{StatusInterval: 2 * time.Second},
		Sources: []Source{
			{Topic: "a", Format: FormatJSON, Partitions: 8, Fields: FieldNames{
				ID: "id", Type: "type", AggregateID: "aggregate_id", Version: "version", CreatedAt: "created_at", Data: "data",
			}},
			{Topic: "b", Format: FormatCloudEvents, Partitions: 8},
		},
		Projections: []Projection{{
			Name: "p", Ordering: OrderingGlobal, OnError: OnErrorFail,
			IdleTimeout: time.Second, MaxLateness: &oneSecond, BatchSize: 2000, Workers: 4,
		}},
	}, *c)

	// Defaults fill only what is empty, and only once.
	before := *c
	c.SetDefaults()
	require.Equal(t, before, *c)
}

func TestSetDefaultsKeepsPartialFieldNames(t *testing.T) {
	t.Parallel()
	s := Source{Topic: "a", Fields: FieldNames{Type: "kind", Data: "body"}}
	s.setDefaults()
	require.Equal(t, FieldNames{ID: "id", Type: "kind", AggregateID: "aggregate_id", Version: "version", CreatedAt: "created_at", Data: "body"}, s.Fields)
}

func TestApplyEnv(t *testing.T) {
	t.Parallel()
	const fileURL = "postgres://file@db/app"
	tests := []struct {
		name        string
		env         map[string]string
		wantBrokers []string
		wantURL     string
		wantSecret  string
		wantPass    string
	}{
		{
			name:        "nothing set keeps the file",
			wantBrokers: []string{"file:9092"}, wantURL: fileURL, wantSecret: "file-secret", wantPass: "file-pass",
		},
		{
			name:        "KREPLAY_DATABASE_URL beats DATABASE_URL beats the file",
			env:         map[string]string{"KREPLAY_DATABASE_URL": "postgres://kreplay@db/app", "DATABASE_URL": "postgres://generic@db/app"},
			wantBrokers: []string{"file:9092"}, wantURL: "postgres://kreplay@db/app", wantSecret: "file-secret", wantPass: "file-pass",
		},
		{
			name:        "DATABASE_URL beats the file",
			env:         map[string]string{"DATABASE_URL": "postgres://generic@db/app"},
			wantBrokers: []string{"file:9092"}, wantURL: "postgres://generic@db/app", wantSecret: "file-secret", wantPass: "file-pass",
		},
		{
			name:        "blank KREPLAY_DATABASE_URL falls through to DATABASE_URL",
			env:         map[string]string{"KREPLAY_DATABASE_URL": "  ", "DATABASE_URL": "postgres://generic@db/app"},
			wantBrokers: []string{"file:9092"}, wantURL: "postgres://generic@db/app", wantSecret: "file-secret", wantPass: "file-pass",
		},
		{
			name:        "brokers are split on commas and trimmed",
			env:         map[string]string{"KREPLAY_BROKERS": " k1:9092 ,k2:9092,, k3:9092 "},
			wantBrokers: []string{"k1:9092", "k2:9092", "k3:9092"}, wantURL: fileURL, wantSecret: "file-secret", wantPass: "file-pass",
		},
		{
			name:        "blank brokers keep the file",
			env:         map[string]string{"KREPLAY_BROKERS": " "},
			wantBrokers: []string{"file:9092"}, wantURL: fileURL, wantSecret: "file-secret", wantPass: "file-pass",
		},
		{
			name:        "secrets",
			env:         map[string]string{"KREPLAY_CONTROL_SECRET": "env-secret", "KREPLAY_KAFKA_PASSWORD": "env-pass"},
			wantBrokers: []string{"file:9092"}, wantURL: fileURL, wantSecret: "env-secret", wantPass: "env-pass",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Config{
				Kafka:    KafkaConfig{Brokers: []string{"file:9092"}, SASL: SASLConfig{Password: "file-pass"}},
				Postgres: PostgresConfig{URL: fileURL},
				Control:  ControlConfig{Secret: "file-secret"},
			}
			c.ApplyEnv(env(tt.env))
			require.Equal(t, tt.wantBrokers, c.Kafka.Brokers)
			require.Equal(t, tt.wantURL, c.Postgres.URL)
			require.Equal(t, tt.wantSecret, c.Control.Secret)
			require.Equal(t, tt.wantPass, c.Kafka.SASL.Password)
		})
	}
}

func TestLoadAppliesEnvBeforeDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	c, err := Load("testdata/kreplay.yaml", env(map[string]string{
		"KREPLAY_BROKERS": "embedded",
		"DATABASE_URL":    "postgres://app@db/app",
	}))
	require.NoError(t, err)
	require.Equal(t, []string{"embedded"}, c.Kafka.Brokers)
	require.Equal(t, "postgres://app@db/app", c.Postgres.URL)

	// An environment that makes the config invalid is reported by Load.
	_, err = Load("testdata/kreplay.yaml", env(map[string]string{"KREPLAY_BROKERS": "embedded,k1:9092"}))
	require.ErrorContains(t, err, `testdata/kreplay.yaml: kafka.brokers: "embedded" must be the only entry`)

	// A variable that is set but names no broker is refused, not read as "use the default
	// 127.0.0.1:9092".
	_, err = Load("testdata/kreplay.yaml", env(map[string]string{"KREPLAY_BROKERS": " , "}))
	require.ErrorContains(t, err, `testdata/kreplay.yaml: KREPLAY_BROKERS " , " names no broker; set it to host:port[,host:port...] or unset it`)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	_, err := Load(filepath.Join(dir, "missing.yaml"), env(nil))
	require.EqualError(t, err, `config file "`+filepath.Join(dir, "missing.yaml")+`" not found; pass --config or set KREPLAY_CONFIG`)

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("projections:\n  - name: p\n    handler: {}\n"), 0o600))
	_, err = Load(bad, env(nil))
	require.ErrorContains(t, err, bad+`: config line 3: unknown key "handler"`)

	invalid := filepath.Join(dir, "invalid.yaml")
	require.NoError(t, os.WriteFile(invalid, []byte("sources: [{topic: a}]\nprojections:\n  - name: P\n    sources: [b]\n"), 0o600))
	_, err = Load(invalid, env(nil))
	require.Error(t, err)
	// Every problem is on its own line, prefixed with the path.
	lines := strings.Split(err.Error(), "\n")
	require.Greater(t, len(lines), 2)
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, invalid+": "), "line %q lacks the path", l)
	}
	require.Contains(t, err.Error(), `projection "P": invalid name "P"`)
	require.Contains(t, err.Error(), `projection "P": source "b" is not declared; add it under sources: (declared: a)`)

	_, err = Load(dir, env(nil)) // a directory
	require.ErrorContains(t, err, "read config file")
}

func TestParseUnknownKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, want string
	}{
		{
			name: "top level",
			yaml: "kafka: {}\nprojection: []\n",
			want: `config line 2: unknown key "projection" (known keys here: installation, kafka, postgres, http, control, sources, projections); did you mean "projections"?`,
		},
		{
			name: "nested in a projection",
			yaml: "projections:\n  - name: balances\n    ordering: global\n    handler:\n      A: SELECT 1\n",
			want: `config line 4: unknown key "handler" (known keys here: name, ordering, on_error, sources, tables, handlers, checks, folds, reads, idle_timeout, max_lateness, batch_size, workers, allow_truncated_history); did you mean "handlers"?`,
		},
		{
			name: "deeply nested",
			yaml: "kafka:\n  tls:\n    enabled: true\n    ca: x\n",
			want: `config line 4: unknown key "ca" (known keys here: enabled, ca_file, cert_file, key_file, server_name, insecure_skip_verify)`,
		},
		{
			name: "source fields",
			yaml: "sources:\n  - topic: a\n    fields:\n      timestamp: ts\n",
			want: `config line 4: unknown key "timestamp" (known keys here: id, type, aggregate_id, version, created_at, data)`,
		},
		{
			name: "json tag is not a yaml key",
			yaml: "sources:\n  - topic: a\n    Partitions: 3\n",
			want: `config line 3: unknown key "Partitions" (known keys here: topic, format, fields, partitions); did you mean "partitions"?`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml))
			require.EqualError(t, err, tt.want)
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"config is empty"}},
		{"comments only", "# nothing here\n", []string{"config is empty"}},
		{"null document", "---\n~\n", []string{"config is empty"}},
		{"two documents", "kafka: {}\n---\npostgres: {}\n", []string{"config line 3: a second YAML document starts here"}},
		{"top level list", "- a\n- b\n", []string{"config line 1: want a mapping with the keys installation, kafka, postgres, http, control, sources, projections at the top, got a list"}},
		{"top level scalar", "hello\n", []string{`got "hello"`}},
		{"syntax", "kafka:\n  brokers: [a\n", []string{"config line"}},
		{"tab indentation", "kafka:\n\tbrokers: []\n", []string{"config line 2: found character that cannot start any token"}},
		{"bad ordering", "projections:\n  - name: p\n    ordering: globle\n", []string{`config line 3: "ordering": unknown ordering "globle" (valid: global, partition)`}},
		{"bad on_error", "projections:\n  - name: p\n    on_error: retry\n", []string{`config line 3: "on_error": unknown on_error "retry" (valid: fail, skip, dead_letter)`}},
		{"bad format", "sources:\n  - topic: a\n    format: avro\n", []string{`config line 3: "format": unknown format "avro" (valid: json, cloudevents)`}},
		{"enum as list", "projections:\n  - name: p\n    ordering: [global]\n", []string{`config line 3: "ordering": want one of global, partition, got a list`}},
		{"duration without unit", "kafka:\n  session_timeout: 45\n", []string{`config line 2: "session_timeout": want a duration with a unit, such as "45s" or "45ms", got 45`}},
		{"duration garbage", "control:\n  status_interval: soon\n", []string{`config line 2: "status_interval": want a duration such as "1s" or "250ms", got "soon"`}},
		{"duration as mapping", "projections:\n  - idle_timeout: {s: 1}\n", []string{`config line 2: "idle_timeout": want a duration such as "1s" or "250ms", got a mapping`}},
		{"int garbage", "projections:\n  - batch_size: lots\n", []string{`config line 2: "batch_size": want an integer, got "lots"`}},
		{"int32 overflow", "sources:\n  - topic: a\n    partitions: 3000000000\n", []string{`config line 3: "partitions": want an integer that fits in 32 bits, got 3000000000`}},
		{"bool garbage", "kafka:\n  tls:\n    enabled: maybe\n", []string{`config line 3: "enabled": want true or false, got "maybe"`}},
		{"brokers as string", "kafka:\n  brokers: a:9092\n", []string{`config line 2: "brokers": want a list, got "a:9092"`}},
		{"broker as mapping", "kafka:\n  brokers:\n    - {host: a}\n", []string{`config line 3: "brokers[0]": want a string, got a mapping`}},
		{"handlers as list", "projections:\n  - handlers: [SELECT 1]\n", []string{`config line 2: "handlers": want a mapping, got a list`}},
		{"handler as mapping", "projections:\n  - handlers:\n      A:\n        sql: SELECT 1\n", []string{`config line 4: "A": want a string, got a mapping`}},
		{"kafka as list", "kafka: [a]\n", []string{`config line 1: "kafka": want a mapping with the keys brokers, embedded_listen`}},
		{"duplicate key", "projections:\n  - name: a\n    name: b\n", []string{`config line 3: key "name" appears twice (first at line 2); keep one`}},
		{"duplicate handler", "projections:\n  - handlers:\n      A: SELECT 1\n      A: SELECT 2\n", []string{`config line 4: "handlers": key "A" appears twice (first at line 3)`}},
		{
			"several problems at once",
			"kafka:\n  session_timeout: 5\nprojections:\n  - name: p\n    ordering: nope\n    extra: 1\n",
			[]string{"config line 2:", "config line 5:", "config line 6:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tt.yaml))
			require.Error(t, err)
			require.Nil(t, c)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, c *Config)
	}{
		{"empty enum means default", "projections:\n  - name: p\n    ordering: \"\"\n    on_error:\n", func(t *testing.T, c *Config) {
			c.SetDefaults()
			require.Equal(t, OrderingGlobal, c.Projections[0].Ordering)
			require.Equal(t, OnErrorFail, c.Projections[0].OnError)
		}},
		{"durations", "kafka:\n  session_timeout: 1m30s\npostgres:\n  lock_timeout: 250ms\n", func(t *testing.T, c *Config) {
			require.Equal(t, 90*time.Second, c.Kafka.SessionTimeout)
			require.Equal(t, 250*time.Millisecond, c.Postgres.LockTimeout)
		}},
		{"yaml 1.1 booleans", "kafka:\n  tls:\n    enabled: yes\n", func(t *testing.T, c *Config) {
			require.True(t, c.Kafka.TLS.Enabled)
		}},
		{"number as topic", "sources:\n  - topic: 2024\n", func(t *testing.T, c *Config) {
			require.Equal(t, "2024", c.Sources[0].Topic)
		}},
		{"trailing empty document", "kafka: {}\n---\n", func(t *testing.T, c *Config) {
			require.Empty(t, c.Kafka.Brokers)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tt.yaml))
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestParseMergeKeys(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`
sources:
  - &src
    topic: a
    partitions: 2
  - <<: *src
    topic: b
projections:
  - &p
    name: a
    ordering: partition
    workers: 2
  - <<: *p
    name: b
    workers: 3
`))
	require.NoError(t, err)
	require.Equal(t, int32(2), c.Sources[1].Partitions)
	require.Equal(t, "b", c.Sources[1].Topic)
	require.Equal(t, OrderingPartition, c.Projections[1].Ordering)
	require.Equal(t, 3, c.Projections[1].Workers)

	_, err = Parse([]byte("projections:\n  - &p\n    name: a\n  - <<: *p\n    bogus: 1\n"))
	require.ErrorContains(t, err, `config line 5: unknown key "bogus"`)
	_, err = Parse([]byte("x: &bad {bogus: 1}\n"))
	require.ErrorContains(t, err, `unknown key "x"`)
	_, err = Parse([]byte("kafka:\n  <<: {bogus: 1}\n"))
	require.ErrorContains(t, err, `config line 2: unknown key "bogus"`)
}

func TestParseAliasBomb(t *testing.T) {
	t.Parallel()
	// Each projection merges the previous one twice: expanded, the last
	// would hold 2^40 merges.
	var b strings.Builder
	b.WriteString("projections:\n  - &p0 {name: a}\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "  - &p%d {<<: [*p%d, *p%d]}\n", i, i-1, i-1)
	}
	_, err := Parse([]byte(b.String()))
	require.ErrorContains(t, err, "excessive aliasing")
}

// validConfig returns a config that validates, for Validate tests to break.
func validConfig() *Config {
	c := &Config{
		Sources: []Source{{Topic: "bank.accounts"}, {Topic: "bank.transfers", Format: FormatCloudEvents}},
		Projections: []Projection{{
			Name:     "balances",
			Sources:  []string{"bank.accounts", "bank.transfers"},
			Tables:   []string{"CREATE TABLE balances (account_id text PRIMARY KEY, total bigint)"},
			Handlers: map[string]string{"MoneyDeposited": "UPDATE balances SET total = total + (@data->>'amount')::bigint WHERE account_id = @aggregate_id"},
			Checks:   []string{"SELECT count(*) FROM balances"},
		}},
	}
	c.SetDefaults()
	return c
}

func TestValidateAcceptsValidConfig(t *testing.T) {
	t.Parallel()
	require.NoError(t, validConfig().Validate())
	c := validConfig()
	c.Kafka.Brokers = []string{"embedded"}
	c.HTTP.Listen = "off"
	c.Postgres.ReaderRole = "app_reader"
	c.Kafka.TLS = TLSConfig{Enabled: true, CertFile: "c.pem", KeyFile: "k.pem"}
	c.Kafka.SASL = SASLConfig{Mechanism: "PLAIN", Username: "u", Password: "p"}
	c.Projections[0].Workers = 64
	c.Projections[0].BatchSize = 100000
	require.NoError(t, c.Validate())
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		// kafka
		{"no brokers", func(c *Config) { c.Kafka.Brokers = nil }, `kafka.brokers: none; list the seed brokers as host:port, or ["embedded"] for the in-process broker, or set KREPLAY_BROKERS`},
		{"blank broker", func(c *Config) { c.Kafka.Brokers = []string{"a:9092", " "} }, `kafka.brokers[1] is blank; write host:port or remove the entry`},
		{"comma-joined brokers", func(c *Config) { c.Kafka.Brokers = []string{"a:9092,b:9092"} }, `kafka.brokers[0] "a:9092,b:9092" holds several addresses; list each broker as its own entry`},
		{"embedded with others", func(c *Config) { c.Kafka.Brokers = []string{"a:9092", "embedded"} }, `kafka.brokers: "embedded" must be the only entry (got ["a:9092" "embedded"])`},
		{"embedded listen", func(c *Config) { c.Kafka.EmbeddedListen = "9092" }, `kafka.embedded_listen "9092": want host:port`},
		{"blank client id", func(c *Config) { c.Kafka.ClientID = " " }, `kafka.client_id is blank`},
		{"control topic name", func(c *Config) { c.Kafka.ControlTopic = "kreplay control" }, `kafka.control_topic: invalid topic name "kreplay control" (15 bytes): use 1-249 characters from a-z, A-Z, 0-9, '.', '_' and '-', other than "." and ".."`},
		{"status topic dot", func(c *Config) { c.Kafka.StatusTopic = "." }, `kafka.status_topic: invalid topic name "."`},
		{"dead letter topic dotdot", func(c *Config) { c.Kafka.DeadLetterTopic = ".." }, `kafka.dead_letter_topic: invalid topic name ".."`},
		{"topic too long", func(c *Config) { c.Kafka.DeadLetterTopic = strings.Repeat("a", 250) }, `(250 bytes)`},
		{"control is a source", func(c *Config) { c.Kafka.ControlTopic = "bank.accounts" }, `kafka.control_topic "bank.accounts" is also declared under sources:; kreplay's own topics must be distinct from event topics`},
		{"status is control", func(c *Config) { c.Kafka.StatusTopic = c.Kafka.ControlTopic }, `kafka.control_topic and kafka.status_topic are both "kreplay.control"; each needs its own topic`},
		{"installation characters", func(c *Config) { c.Installation = "shop eu" }, `installation "shop eu": use 1-64 characters from a-z, A-Z, 0-9, '.', '_' and '-'`},
		{"installation too long", func(c *Config) { c.Installation = strings.Repeat("a", 65) }, `installation "` + strings.Repeat("a", 65) + `": use 1-64 characters`},
		{"installation dot", func(c *Config) { c.Installation = ".." }, `installation "..": use 1-64 characters`},
		{"session timeout", func(c *Config) { c.Kafka.SessionTimeout = -time.Second }, `kafka.session_timeout -1s: must be positive`},
		{"rebalance timeout", func(c *Config) { c.Kafka.RebalanceTimeout = -1 }, `kafka.rebalance_timeout -1ns: must be positive`},
		{"tls file without tls", func(c *Config) { c.Kafka.TLS.CAFile = "ca.pem" }, `kafka.tls.ca_file is set but kafka.tls.enabled is false; set enabled: true or remove ca_file`},
		{"tls skip verify without tls", func(c *Config) { c.Kafka.TLS.InsecureSkipVerify = true }, `kafka.tls.insecure_skip_verify is set but kafka.tls.enabled is false`},
		{"cert without key", func(c *Config) { c.Kafka.TLS = TLSConfig{Enabled: true, CertFile: "c.pem"} }, `kafka.tls: cert_file and key_file go together`},
		{"sasl mechanism", func(c *Config) { c.Kafka.SASL = SASLConfig{Mechanism: "plain", Username: "u", Password: "p"} }, `kafka.sasl.mechanism: unknown mechanism "plain" (valid: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, or empty for none)`},
		{"sasl username", func(c *Config) { c.Kafka.SASL = SASLConfig{Mechanism: "SCRAM-SHA-256", Password: "p"} }, `kafka.sasl.username is empty; mechanism SCRAM-SHA-256 needs a username`},
		{"sasl password", func(c *Config) { c.Kafka.SASL = SASLConfig{Mechanism: "PLAIN", Username: "u"} }, `kafka.sasl.password is empty; mechanism PLAIN needs a password (set it, or KREPLAY_KAFKA_PASSWORD)`},
		{"sasl credentials without mechanism", func(c *Config) { c.Kafka.SASL.Username = "u" }, `kafka.sasl: username or password is set but mechanism is empty`},
		// postgres, http, control
		{"postgres url", func(c *Config) { c.Postgres.URL = " " }, `postgres.url is blank; set it, KREPLAY_DATABASE_URL or DATABASE_URL`},
		{"live schema upper case", func(c *Config) { c.Postgres.LiveSchema = "Public" }, `postgres.live_schema: invalid identifier "Public"`},
		{"live schema catalog", func(c *Config) { c.Postgres.LiveSchema = "kreplay" }, `postgres.live_schema "kreplay" is kreplay's catalog schema`},
		{"live schema quote", func(c *Config) { c.Postgres.LiveSchema = `x"; DROP SCHEMA public; --` }, `postgres.live_schema: invalid identifier "x\"; DROP SCHEMA public; --"`},
		{"live schema reserved", func(c *Config) { c.Postgres.LiveSchema = "select" }, `postgres.live_schema: invalid identifier "select": a reserved SQL keyword`},
		{"max conns", func(c *Config) { c.Postgres.MaxConns = -1 }, `postgres.max_conns -1: must be at least 1`},
		{"lock timeout", func(c *Config) { c.Postgres.LockTimeout = -time.Millisecond }, `postgres.lock_timeout -1ms: must be at least 1ms`},
		{"lock timeout under a millisecond", func(c *Config) { c.Postgres.LockTimeout = 500 * time.Microsecond }, `postgres.lock_timeout 500µs: must be at least 1ms`},
		{"reader role", func(c *Config) { c.Postgres.ReaderRole = "pg_read_all_data" }, `postgres.reader_role: invalid identifier "pg_read_all_data": names starting with "pg_" are reserved by PostgreSQL`},
		{"reader role public", func(c *Config) { c.Postgres.ReaderRole = "public" }, `postgres.reader_role "public": PUBLIC is not a role`},
		{"http listen", func(c *Config) { c.HTTP.Listen = "9464" }, `http.listen "9464": want host:port, such as ":9464" or "127.0.0.1:9464"; or "off" to disable the HTTP server`},
		{"http port", func(c *Config) { c.HTTP.Listen = ":http" }, `http.listen ":http": port "http" is not a number from 0 to 65535`},
		{"status interval", func(c *Config) { c.Control.StatusInterval = -1 }, `control.status_interval -1ns: must be positive`},
		// sources
		{"source topic empty", func(c *Config) { c.Sources[0].Topic = "" }, `sources[0]: topic is empty; set topic:`},
		{"source topic invalid", func(c *Config) { c.Sources[0].Topic = "bank/accounts" }, `source "bank/accounts": invalid topic name "bank/accounts"`},
		{"source twice", func(c *Config) {
			c.Sources = append(c.Sources, Source{Topic: "bank.accounts", Format: FormatJSON, Fields: defaultFieldNames, Partitions: 1})
		}, `source "bank.accounts" is declared twice (sources[0] and sources[2]); keep one`},
		{"source format", func(c *Config) { c.Sources[0].Format = "avro" }, `source "bank.accounts": unknown format "avro" (valid: json, cloudevents)`},
		{"source blank field", func(c *Config) { c.Sources[0].Fields.Type = " " }, `source "bank.accounts": fields.type is blank; name the JSON field or remove the key for the default "type"`},
		{"source same field twice", func(c *Config) { c.Sources[0].Fields.ID = "type" }, `source "bank.accounts": fields.id and fields.type are both "type"; each envelope field needs its own JSON field`},
		{"fields on cloudevents", func(c *Config) { c.Sources[1].Fields.Type = "kind" }, `source "bank.transfers": fields apply to format json only`},
		{"partitions", func(c *Config) { c.Sources[0].Partitions = -2 }, `source "bank.accounts": partitions -2: must be at least 1`},
		// projections
		{"no projections", func(c *Config) { c.Projections = nil }, `projections: none; declare at least one under projections: (only a serve of the embedded broker may have none)`},
		{"projection name empty", func(c *Config) { c.Projections[0].Name = "" }, `projections[0]: name is empty; set name:`},
		{"projection name upper", func(c *Config) { c.Projections[0].Name = "Balances" }, `projection "Balances": invalid name "Balances" (8 bytes): use 1-45 characters from a-z, 0-9 and _, starting with a letter and not with "pg_", so that the first version's replay key "Balances_v1" is a valid schema name`},
		{"projection name long", func(c *Config) { c.Projections[0].Name = strings.Repeat("a", 46) }, `(46 bytes)`},
		{"projection name pg", func(c *Config) { c.Projections[0].Name = "pg_stats" }, `projection "pg_stats": invalid name "pg_stats"`},
		{"projection name NUL", func(c *Config) { c.Projections[0].Name = "bal\x00ances" }, `projection "bal\x00ances": invalid name "bal\x00ances"`},
		{"projection twice", func(c *Config) { c.Projections = append(c.Projections, c.Projections[0]) }, `projection "balances" is declared twice (projections[0] and projections[1]); rename or remove one`},
		{"ordering", func(c *Config) { c.Projections[0].Ordering = "random" }, `projection "balances": unknown ordering "random" (valid: global, partition)`},
		{"on_error", func(c *Config) { c.Projections[0].OnError = "retry" }, `projection "balances": unknown on_error "retry" (valid: fail, skip, dead_letter)`},
		{"no sources", func(c *Config) { c.Projections[0].Sources = nil }, `projection "balances": sources: none; list the topics it reads, each declared under sources:`},
		{"undeclared source", func(c *Config) { c.Projections[0].Sources = []string{"bank.acounts"} }, `projection "balances": source "bank.acounts" is not declared; add it under sources: (declared: bank.accounts, bank.transfers)`},
		{"source listed twice", func(c *Config) { c.Projections[0].Sources = []string{"bank.accounts", "bank.accounts"} }, `projection "balances": source "bank.accounts" is listed twice; list each topic once`},
		{"no tables", func(c *Config) { c.Projections[0].Tables = nil }, `projection "balances": tables: none; add the CREATE TABLE statements of the read model under tables:`},
		{"blank table", func(c *Config) { c.Projections[0].Tables = append(c.Projections[0].Tables, "  \n") }, `projection "balances": tables[1] is blank; write a DDL statement or remove the entry`},
		{"no handlers", func(c *Config) { c.Projections[0].Handlers = nil }, `projection "balances": handlers: none; map at least one event type to a SQL statement under handlers:`},
		{"blank event type", func(c *Config) { c.Projections[0].Handlers[" "] = "SELECT 1" }, `projection "balances": handler " ": blank event type; use the event's type as the key`},
		{"blank handler SQL", func(c *Config) { c.Projections[0].Handlers["A"] = "\n" }, `projection "balances": handler "A": blank SQL; write the statement that applies the event, or remove the handler`},
		{"unknown argument", func(c *Config) {
			c.Projections[0].Handlers["MoneyDeposited"] = "UPDATE balances SET total = total + @amount WHERE account_id = @aggregate_id"
		}, `projection "balances": handler "MoneyDeposited": unknown argument @amount (valid: @event_id, @type, @aggregate_id, @version, @created_at, @data, @topic, @partition, @offset)`},
		{"blank check", func(c *Config) { c.Projections[0].Checks = []string{""} }, `projection "balances": checks[0] is blank; write a query or remove the entry`},
		{"check with an unterminated string", func(c *Config) { c.Projections[0].Checks = []string{"SELECT 'x"} }, `projection "balances": checks[0]: unterminated string at line 1 column 8`},
		{"table split by a flow list", func(c *Config) { c.Projections[0].Tables = []string{"CREATE TABLE t (a int", "b int)"} }, `projection "balances": tables[0]: unbalanced parentheses in "CREATE TABLE t (a int"; in a YAML flow list [a, b] commas split entries, so write statements as a block list (- CREATE TABLE ...)`},
		{"table with a stray parenthesis", func(c *Config) { c.Projections[0].Tables = []string{"CREATE TABLE t (a int))"} }, `projection "balances": tables[0]: unbalanced parentheses: a ')' at line 1 column 23 closes nothing`},
		{"reads without a schema", func(c *Config) { c.Projections[0].Reads = []string{"currencies"} }, `projection "balances": reads[0] "currencies": name the relation with its schema, such as public.currencies`},
		{"reads twice", func(c *Config) { c.Projections[0].Reads = []string{"public.fx", "public.fx"} }, `projection "balances": reads[1] "public.fx" is listed twice; list each relation once`},
		{"reads a quoted name", func(c *Config) { c.Projections[0].Reads = []string{`public.x"; DROP TABLE y; --`} }, `projection "balances": reads[0] "public.x\"; DROP TABLE y; --": invalid identifier`},
		{"reads the catalog", func(c *Config) { c.Projections[0].Reads = []string{"kreplay.versions"} }, `projection "balances": reads[0] "kreplay.versions": kreplay's catalog is not for projections to read; remove it`},
		{"reads pg_catalog", func(c *Config) { c.Projections[0].Reads = []string{"pg_catalog.pg_authid"} }, `projection "balances": reads[0] "pg_catalog.pg_authid": invalid identifier "pg_catalog": names starting with "pg_" are reserved`},
		{"idle timeout", func(c *Config) { c.Projections[0].IdleTimeout = -time.Second }, `projection "balances": idle_timeout -1s: must be positive, such as 1s`},
		{"batch size low", func(c *Config) { c.Projections[0].BatchSize = -1 }, `projection "balances": batch_size -1: must be between 1 and 100000`},
		{"batch size high", func(c *Config) { c.Projections[0].BatchSize = 100001 }, `projection "balances": batch_size 100001: must be between 1 and 100000`},
		{"workers low", func(c *Config) { c.Projections[0].Workers = -1 }, `projection "balances": workers -1: must be between 1 and 64`},
		{"workers high", func(c *Config) { c.Projections[0].Workers = 65 }, `projection "balances": workers 65: must be between 1 and 64`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tt.mutate(c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Kafka.Brokers = nil
	c.Postgres.LiveSchema = "Public"
	c.Projections[0].Workers = 0
	c.Projections[0].Ordering = "x"
	err := c.Validate()
	require.Error(t, err)
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "Validate joins its errors")
	require.Len(t, joined.Unwrap(), 4)
}

// The installation name namespaces kreplay's own topics and its consumer groups; topics set
// explicitly still win; the default name keeps the names of an installation without one.
func TestInstallationNamespaces(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte("installation: shop\nkafka:\n  status_topic: ops.status\nsources:\n  - topic: a\nprojections:\n  - name: p\n"))
	require.NoError(t, err)
	c.SetDefaults()
	require.Equal(t, "shop", c.Installation)
	require.Equal(t, "shop.control", c.Kafka.ControlTopic)
	require.Equal(t, "ops.status", c.Kafka.StatusTopic, "an explicit topic wins")
	require.Equal(t, "shop.dead_letter", c.Kafka.DeadLetterTopic)
	require.Equal(t, "shop.balances.balances_v2", c.GroupName("balances", "balances_v2"))

	d := &Config{}
	d.SetDefaults()
	require.Equal(t, "kreplay", d.Installation)
	require.Equal(t, []string{"kreplay.control", "kreplay.status", "kreplay.dead_letter"}, []string{d.Kafka.ControlTopic, d.Kafka.StatusTopic, d.Kafka.DeadLetterTopic})
	require.Equal(t, "kreplay.balances.balances_v1", d.GroupName("balances", "balances_v1"))

	_, err = Parse([]byte("instalation: shop\nsources:\n  - topic: a\nprojections:\n  - name: p\n")) //nolint:misspell // the typo under test
	require.ErrorContains(t, err, "instalation")                                                     //nolint:misspell // the typo under test
}

// max_lateness: unset is the default, 0s is off (not the default), and a bare number or a value
// out of range is refused naming the fix.
func TestMaxLateness(t *testing.T) {
	t.Parallel()
	parse := func(v string) (*Config, error) {
		src := "sources:\n  - topic: a\nprojections:\n  - name: p\n    sources: [a]\n    tables: [CREATE TABLE t (id text PRIMARY KEY)]\n    handlers: {E: \"INSERT INTO t VALUES (@event_id)\"}\n"
		if v != "" {
			src += "    max_lateness: " + v + "\n"
		}
		c, err := Parse([]byte(src))
		if err != nil {
			return nil, err
		}
		c.SetDefaults()
		return c, c.Validate()
	}
	c, err := parse("")
	require.NoError(t, err)
	require.Equal(t, DefaultMaxLateness, c.Projections[0].Lateness())
	c, err = parse("0s")
	require.NoError(t, err)
	require.Equal(t, time.Duration(0), c.Projections[0].Lateness())
	c, err = parse("250ms")
	require.NoError(t, err)
	require.Equal(t, 250*time.Millisecond, c.Projections[0].Lateness())
	_, err = parse("0")
	require.ErrorContains(t, err, `"max_lateness": want a duration with a unit, such as "0s" or "0ms", got 0`)
	_, err = parse("-1s")
	require.ErrorContains(t, err, `projection "p": max_lateness -1s: must be between 0s (hold nothing back) and 1m0s`)
	_, err = parse("2m")
	require.ErrorContains(t, err, "max_lateness 2m0s: must be between 0s")

	// ordering: partition has no merge: the setting would do nothing.
	c, err = Parse([]byte("sources:\n  - topic: a\nprojections:\n  - name: p\n    ordering: partition\n    max_lateness: 2s\n    sources: [a]\n    tables: [CREATE TABLE t (id text PRIMARY KEY)]\n    handlers: {E: \"INSERT INTO t VALUES (@event_id)\"}\n"))
	require.NoError(t, err)
	c.SetDefaults()
	require.ErrorContains(t, c.Validate(), `projection "p": max_lateness: only ordering global merges partitions; remove it, or set ordering: global`)
}
