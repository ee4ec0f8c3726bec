package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Config is the root of kreplay.yaml.
type Config struct {
	// Installation names this kreplay installation (one catalog, the instances that serve it
	// and the operators that drive it): it prefixes the control, status and dead-letter topics
	// (<installation>.control ...) unless they are set, and the consumer groups
	// (<installation>.<projection>.<key>), so that several installations share a Kafka cluster.
	// Commands carry it, and serve ignores those addressed to another installation. Defaults to
	// "kreplay".
	Installation string         `yaml:"installation"`
	Kafka        KafkaConfig    `yaml:"kafka"`
	Postgres     PostgresConfig `yaml:"postgres"`
	HTTP         HTTPConfig     `yaml:"http"`
	Control      ControlConfig  `yaml:"control"`
	Sources      []Source       `yaml:"sources"`
	Projections  []Projection   `yaml:"projections"`

	envErrs []error // what ApplyEnv could not use: see EnvError
}

// KafkaConfig is how kreplay reaches Kafka.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port. KREPLAY_BROKERS
	// (comma-separated) overrides them. ["embedded"] runs an in-process
	// broker (development only, in memory). Defaults to ["127.0.0.1:9092"].
	Brokers []string `yaml:"brokers"`
	// EmbeddedListen is where the embedded broker listens. Defaults to
	// "127.0.0.1:9092".
	EmbeddedListen string `yaml:"embedded_listen"`
	// ClientID is the Kafka client id. Defaults to "kreplay".
	ClientID string `yaml:"client_id"`
	// ControlTopic carries the commands. Defaults to "<installation>.control"
	// ("kreplay.control").
	ControlTopic string `yaml:"control_topic"`
	// StatusTopic carries command outcomes and status. Defaults to
	// "<installation>.status" ("kreplay.status").
	StatusTopic string `yaml:"status_topic"`
	// DeadLetterTopic receives the records of projections with on_error:
	// dead_letter. Defaults to "<installation>.dead_letter" ("kreplay.dead_letter").
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// SessionTimeout is the consumer group session timeout. Defaults to 45s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout is the consumer group rebalance timeout. Defaults
	// to 60s.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	// InstanceID, when set, makes this instance a static member of its
	// consumer groups (KIP-345): restarted with the same id, it takes its
	// partitions back at once instead of after the session timeout. It must
	// be unique per instance and stable across its restarts (a pod name of a
	// StatefulSet, say). KREPLAY_INSTANCE_ID overrides it. Defaults to "": a
	// dynamic member.
	InstanceID string     `yaml:"instance_id"`
	TLS        TLSConfig  `yaml:"tls"`
	SASL       SASLConfig `yaml:"sasl"`
}

// TLSConfig secures the connections to Kafka. Files are read when kreplay
// connects, not when the config is validated.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled"`              // Defaults to false.
	CAFile             string `yaml:"ca_file"`              // PEM CA bundle; the system pool when empty.
	CertFile           string `yaml:"cert_file"`            // PEM client certificate, with key_file.
	KeyFile            string `yaml:"key_file"`             // PEM client key, with cert_file.
	ServerName         string `yaml:"server_name"`          // Defaults to the broker's host name.
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // Defaults to false.
}

// SASLConfig authenticates to Kafka.
type SASLConfig struct {
	// Mechanism is "" (off, the default), "PLAIN", "SCRAM-SHA-256" or
	// "SCRAM-SHA-512".
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password is overridden by KREPLAY_KAFKA_PASSWORD.
	Password string `yaml:"password"`
}

var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// PostgresConfig is how kreplay reaches PostgreSQL.
type PostgresConfig struct {
	// URL is the connection string. KREPLAY_DATABASE_URL, else
	// DATABASE_URL, overrides it. Defaults to
	// "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".
	URL string `yaml:"url"`
	// LiveSchema holds one view per table of each projection's live
	// version. Defaults to "public".
	LiveSchema string `yaml:"live_schema"`
	// MaxConns is the pool size for catalog work. Defaults to 8.
	MaxConns int32 `yaml:"max_conns"`
	// LockTimeout is PostgreSQL's lock_timeout for the view swap, which is
	// retried, so that a long reader cannot make the swap queue up other
	// readers. Defaults to 200ms.
	LockTimeout time.Duration `yaml:"lock_timeout"`
	// ReaderRole, when set, is granted SELECT on the live views. Defaults
	// to "" (no grant).
	ReaderRole string `yaml:"reader_role"`
}

// HTTPConfig is the HTTP server for /metrics, /healthz, /readyz and
// /api/replays.
type HTTPConfig struct {
	// Listen is host:port, or "off" to disable the server. Defaults to
	// ":9464".
	Listen string `yaml:"listen"`
}

// ControlConfig is the control plane.
type ControlConfig struct {
	// Secret signs commands (HMAC-SHA256). KREPLAY_CONTROL_SECRET overrides
	// it. Defaults to "": unsigned commands are accepted.
	Secret string `yaml:"secret"`
	// StatusInterval is the period of the status records. Defaults to 2s.
	StatusInterval time.Duration `yaml:"status_interval"`
}

// embeddedBroker is the kafka.brokers entry that runs an in-process broker.
const embeddedBroker = "embedded"

// DefaultInstallation is the installation name of a config that sets none: its topics and
// groups keep the names they had before installations were named.
const DefaultInstallation = "kreplay"

// installationRE is an installation name: Kafka topic characters, short enough that its topics
// and groups (<installation>.<projection>.<key>) stay readable.
var installationRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)

// ValidateInstallation checks an installation name.
func ValidateInstallation(name string) error {
	if !installationRE.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("installation %q: use 1-64 characters from a-z, A-Z, 0-9, '.', '_' and '-' (other than \".\" and \"..\"), such as installation: shop", name)
	}
	return nil
}

// The catalog schema, which no other setting may name.
const catalogSchema = "kreplay"

// Load reads the config file at path, applies the environment (getenv, or
// os.Getenv when nil), the defaults and validates the result. Every error
// names the path.
func Load(path string, getenv func(string) string) (*Config, error) {
	c, err := ReadFile(path, getenv)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, PrefixErrors(path, err)
	}
	return c, nil
}

// ReadFile is Load without Validate: it reads and parses the file, applies the environment and
// fills the defaults. It is for a program that adds projections of its own in Go
// (processor.Options.Projectors) to a file that declares only kafka:, postgres: and sources:,
// which Load refuses ("projections: none"); processor.New validates the config once they are
// added.
func ReadFile(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config file %q not found; pass --config or set KREPLAY_CONFIG", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, PrefixErrors(path, err)
	}
	c.ApplyEnv(getenv)
	c.SetDefaults()
	return c, nil
}

// PrefixErrors prefixes every problem of err, which may be joined, with the
// path, so that each line of the message says where it comes from.
func PrefixErrors(path string, err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s: %w", path, e)
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// EnvError is what ApplyEnv could not use (a variable set to something unusable), or nil.
// Validate reports it too; a client that does not validate the whole config checks it alone.
func (c *Config) EnvError() error { return errors.Join(c.envErrs...) }

// ApplyEnv lets the environment override the deployment settings:
// KREPLAY_BROKERS (comma-separated) the brokers, KREPLAY_DATABASE_URL, else
// DATABASE_URL, the PostgreSQL URL, KREPLAY_CONTROL_SECRET the control secret,
// KREPLAY_KAFKA_PASSWORD the SASL password and KREPLAY_INSTANCE_ID the static
// group member id. Unset or blank variables
// change nothing. getenv is typically os.Getenv, which is used when it is
// nil.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if v := getenv("KREPLAY_BROKERS"); strings.TrimSpace(v) != "" {
		var brokers []string
		for b := range strings.SplitSeq(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		if len(brokers) == 0 {
			c.envErrs = append(c.envErrs, fmt.Errorf("KREPLAY_BROKERS %q names no broker; set it to host:port[,host:port...] or unset it", v))
		} else {
			c.Kafka.Brokers = brokers
		}
	}
	if v := strings.TrimSpace(getenv("KREPLAY_DATABASE_URL")); v != "" {
		c.Postgres.URL = v
	} else if v := strings.TrimSpace(getenv("DATABASE_URL")); v != "" {
		c.Postgres.URL = v
	}
	if v := getenv("KREPLAY_CONTROL_SECRET"); v != "" {
		c.Control.Secret = v
	}
	if v := getenv("KREPLAY_KAFKA_PASSWORD"); v != "" {
		c.Kafka.SASL.Password = v
	}
	if v := strings.TrimSpace(getenv("KREPLAY_INSTANCE_ID")); v != "" {
		c.Kafka.InstanceID = v
	}
}

// SetDefaults fills every setting left empty with its default, sources and
// projections included.
func (c *Config) SetDefaults() {
	setString(&c.Installation, DefaultInstallation)
	k := &c.Kafka
	if len(k.Brokers) == 0 {
		k.Brokers = []string{"127.0.0.1:9092"}
	}
	setString(&k.EmbeddedListen, "127.0.0.1:9092")
	setString(&k.ClientID, "kreplay")
	setString(&k.ControlTopic, c.Installation+".control")
	setString(&k.StatusTopic, c.Installation+".status")
	setString(&k.DeadLetterTopic, c.Installation+".dead_letter")
	setDuration(&k.SessionTimeout, 45*time.Second)
	setDuration(&k.RebalanceTimeout, 60*time.Second)

	p := &c.Postgres
	setString(&p.URL, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	setString(&p.LiveSchema, "public")
	if p.MaxConns == 0 {
		p.MaxConns = 8
	}
	setDuration(&p.LockTimeout, 200*time.Millisecond)

	setString(&c.HTTP.Listen, ":9464")
	setDuration(&c.Control.StatusInterval, 2*time.Second)

	for i := range c.Sources {
		c.Sources[i].setDefaults()
	}
	for i := range c.Projections {
		c.Projections[i].setDefaults()
	}
}

func setString(v *string, def string) {
	if *v == "" {
		*v = def
	}
}

func setDuration(v *time.Duration, def time.Duration) {
	if *v == 0 {
		*v = def
	}
}

// GroupName is the Kafka consumer group of a version, <installation>.<projection>.<key>:
// standard lag tools show every version's progress under it.
func (c *Config) GroupName(projection, key string) string {
	return c.Installation + "." + projection + "." + key
}

// Projection returns the projection with the given name.
func (c *Config) Projection(name string) (*Projection, bool) {
	for i := range c.Projections {
		if c.Projections[i].Name == name {
			return &c.Projections[i], true
		}
	}
	return nil, false
}

// Source returns the source of the given topic.
func (c *Config) Source(topic string) (*Source, bool) {
	for i := range c.Sources {
		if c.Sources[i].Topic == topic {
			return &c.Sources[i], true
		}
	}
	return nil, false
}

// Validate checks a config after SetDefaults and returns every problem
// found, joined; each names the setting at fault and how to fix it.
func (c *Config) Validate() error {
	v := &validator{}
	v.errs = append(v.errs, c.envErrs...)
	if err := ValidateInstallation(c.Installation); err != nil {
		v.errs = append(v.errs, err)
	}
	c.validateKafka(v)
	c.validatePostgres(v)
	if l := c.HTTP.Listen; l != "off" {
		if err := validateHostPort(l); err != nil {
			v.add("http.listen %q: %v; or \"off\" to disable the HTTP server", l, err)
		}
	}
	if c.Control.StatusInterval <= 0 {
		v.add("control.status_interval %s: must be positive, such as 2s", c.Control.StatusInterval)
	}
	if s := c.Control.Secret; s != "" && (strings.Contains(strings.ToUpper(s), "CHANGE-ME") || strings.HasPrefix(s, "<")) {
		v.add("control.secret (or KREPLAY_CONTROL_SECRET) is the example's placeholder %q; set a long random value of your own (openssl rand -hex 32), or leave it unset for unsigned commands", s)
	}
	c.validateSources(v)
	c.validateProjections(v)
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (c *Config) validateKafka(v *validator) {
	k := c.Kafka
	switch {
	case len(k.Brokers) == 0:
		v.add("kafka.brokers: none; list the seed brokers as host:port, or [%q] for the in-process broker, or set KREPLAY_BROKERS", embeddedBroker)
	case len(k.Brokers) > 1 && slices.Contains(k.Brokers, embeddedBroker):
		v.add("kafka.brokers: %q must be the only entry (got %q); remove the other brokers or %q", embeddedBroker, k.Brokers, embeddedBroker)
	}
	for i, b := range k.Brokers {
		switch {
		case strings.TrimSpace(b) == "":
			v.add("kafka.brokers[%d] is blank; write host:port or remove the entry", i)
		case b == embeddedBroker:
		case strings.ContainsAny(b, ", \t"):
			v.add("kafka.brokers[%d] %q holds several addresses; list each broker as its own entry, such as [a:9092, b:9092]", i, b)
		}
	}
	if err := validateHostPort(k.EmbeddedListen); err != nil {
		v.add("kafka.embedded_listen %q: %v", k.EmbeddedListen, err)
	}
	if strings.TrimSpace(k.ClientID) == "" {
		v.add("kafka.client_id is blank; remove it for the default %q", "kreplay")
	}
	if id := k.InstanceID; id != "" && (len(id) > 200 || strings.IndexFunc(id, unicode.IsControl) >= 0 || strings.TrimSpace(id) != id) {
		v.add("kafka.instance_id %q: want a short printable name without surrounding spaces, unique per instance (a pod name, say)", id)
	}
	internal := []struct{ key, topic string }{
		{"kafka.control_topic", k.ControlTopic},
		{"kafka.status_topic", k.StatusTopic},
		{"kafka.dead_letter_topic", k.DeadLetterTopic},
	}
	for i, t := range internal {
		if err := validateTopic(t.topic); err != nil {
			v.add("%s: %v", t.key, err)
			continue
		}
		for _, u := range internal[:i] {
			if u.topic == t.topic {
				v.add("%s and %s are both %q; each needs its own topic", u.key, t.key, t.topic)
			}
		}
		if _, ok := c.Source(t.topic); ok {
			v.add("%s %q is also declared under sources:; kreplay's own topics must be distinct from event topics", t.key, t.topic)
		}
	}
	if k.SessionTimeout <= 0 {
		v.add("kafka.session_timeout %s: must be positive, such as 45s", k.SessionTimeout)
	}
	if k.RebalanceTimeout <= 0 {
		v.add("kafka.rebalance_timeout %s: must be positive, such as 60s", k.RebalanceTimeout)
	}
	t := k.TLS
	if !t.Enabled {
		for _, f := range []struct{ key, val string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"server_name", t.ServerName}} {
			if f.val != "" {
				v.add("kafka.tls.%s is set but kafka.tls.enabled is false; set enabled: true or remove %s", f.key, f.key)
			}
		}
		if t.InsecureSkipVerify {
			v.add("kafka.tls.insecure_skip_verify is set but kafka.tls.enabled is false; set enabled: true or remove insecure_skip_verify")
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add("kafka.tls: cert_file and key_file go together; set both for a client certificate, or neither")
	}
	s := k.SASL
	switch {
	case s.Mechanism == "":
		if s.Username != "" || s.Password != "" {
			v.add("kafka.sasl: username or password is set but mechanism is empty; set mechanism: (%s)", strings.Join(saslMechanisms, ", "))
		}
	case !slices.Contains(saslMechanisms, s.Mechanism):
		v.add("kafka.sasl.mechanism: unknown mechanism %q (valid: %s, or empty for none)", s.Mechanism, strings.Join(saslMechanisms, ", "))
	default:
		if s.Username == "" {
			v.add("kafka.sasl.username is empty; mechanism %s needs a username", s.Mechanism)
		}
		if s.Password == "" {
			v.add("kafka.sasl.password is empty; mechanism %s needs a password (set it, or KREPLAY_KAFKA_PASSWORD)", s.Mechanism)
		}
	}
}

func (c *Config) validatePostgres(v *validator) {
	p := c.Postgres
	if strings.TrimSpace(p.URL) == "" {
		v.add("postgres.url is blank; set it, KREPLAY_DATABASE_URL or DATABASE_URL")
	}
	if err := ValidateIdentifier(p.LiveSchema); err != nil {
		v.add("postgres.live_schema: %v", err)
	} else if p.LiveSchema == catalogSchema {
		v.add("postgres.live_schema %q is kreplay's catalog schema; choose another schema, such as public", p.LiveSchema)
	}
	if p.MaxConns < 1 {
		v.add("postgres.max_conns %d: must be at least 1", p.MaxConns)
	}
	if p.LockTimeout < time.Millisecond {
		// PostgreSQL takes whole milliseconds, and lock_timeout = 0 means no timeout at all.
		v.add("postgres.lock_timeout %s: must be at least 1ms, such as 200ms", p.LockTimeout)
	}
	if p.ReaderRole != "" {
		if err := ValidateIdentifier(p.ReaderRole); err != nil {
			v.add("postgres.reader_role: %v", err)
		} else if p.ReaderRole == "public" {
			v.add("postgres.reader_role %q: PUBLIC is not a role; name a role, or remove reader_role", p.ReaderRole)
		}
	}
}

func (c *Config) validateSources(v *validator) {
	first := map[string]int{}
	for i, s := range c.Sources {
		name := fmt.Sprintf("sources[%d]", i)
		if s.Topic != "" {
			name = fmt.Sprintf("source %q", s.Topic)
			if j, dup := first[s.Topic]; dup {
				v.add("%s is declared twice (sources[%d] and sources[%d]); keep one", name, j, i)
				continue
			}
			first[s.Topic] = i
		}
		for _, err := range s.validate() {
			v.add("%s: %v", name, err)
		}
		if s.Partitions < 1 {
			v.add("%s: partitions %d: must be at least 1", name, s.Partitions)
		}
	}
}

func (c *Config) validateProjections(v *validator) {
	if len(c.Projections) == 0 && (len(c.Kafka.Brokers) != 1 || c.Kafka.Brokers[0] != embeddedBroker) {
		// A serve that only hosts the embedded broker, for other serves to use, needs none.
		v.add("projections: none; declare at least one under projections: (only a serve of the embedded broker may have none)")
	}
	declared := make([]string, len(c.Sources))
	for i, s := range c.Sources {
		declared[i] = s.Topic
	}
	first := map[string]int{}
	for i, p := range c.Projections {
		name := fmt.Sprintf("projection %q", p.Name)
		if p.Name == "" {
			name = fmt.Sprintf("projections[%d]", i)
		}
		if err := validateProjectionName(p.Name); err != nil {
			v.add("%s: %v", name, err)
		}
		if j, dup := first[p.Name]; dup && p.Name != "" {
			v.add("%s is declared twice (projections[%d] and projections[%d]); rename or remove one", name, j, i)
		}
		first[p.Name] = i

		if len(p.Sources) == 0 {
			v.add("%s: sources: none; list the topics it reads, each declared under sources:", name)
		}
		seen := map[string]bool{}
		for _, topic := range p.Sources {
			if seen[topic] {
				v.add("%s: source %q is listed twice; list each topic once", name, topic)
				continue
			}
			seen[topic] = true
			if _, ok := c.Source(topic); !ok {
				v.add("%s: source %q is not declared; add it under sources: (declared: %s)", name, topic, listOrNone(declared))
			}
		}
		for _, err := range validateSemantics(p.Ordering, p.OnError, p.Tables, p.Handlers, p.Checks, p.Folds, p.Reads, p.Code) {
			v.add("%s: %v", name, err)
		}
		if p.IdleTimeout <= 0 {
			v.add("%s: idle_timeout %s: must be positive, such as 1s", name, p.IdleTimeout)
		}
		if p.Ordering == OrderingPartition && p.MaxLateness != nil {
			v.add("%s: max_lateness: only ordering global merges partitions; remove it, or set ordering: global", name)
		}
		if l := p.Lateness(); l < 0 || l > maxLateness {
			v.add("%s: max_lateness %s: must be between 0s (hold nothing back) and %s", name, l, maxLateness)
		}
		if p.BatchSize < 1 || p.BatchSize > maxBatchSize {
			v.add("%s: batch_size %d: must be between 1 and %d", name, p.BatchSize, maxBatchSize)
		}
		if p.Workers < 1 || p.Workers > maxWorkers {
			v.add("%s: workers %d: must be between 1 and %d", name, p.Workers, maxWorkers)
		}
	}
}

// validateHostPort checks a listen address such as ":9464" or
// "127.0.0.1:9092".
func validateHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New(`want host:port, such as ":9464" or "127.0.0.1:9464"`)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func listOrNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// FromYAML parses a config, fills the defaults and validates it, without reading the
// environment: for configs a program builds itself (the demo, tests, the bench).
func FromYAML(data []byte) (*Config, error) {
	c, err := Parse(data)
	if err != nil {
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
