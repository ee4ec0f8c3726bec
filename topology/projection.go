package topology

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Format is the envelope format of a source's records.
type Format string

// The envelope formats.
const (
	FormatJSON        Format = "json"        // a JSON object with configurable field names (the default)
	FormatCloudEvents Format = "cloudevents" // the CloudEvents Kafka binding, binary or structured mode
)

// Ordering is the order in which a projection sees the events of its sources.
type Ordering string

// The orderings.
const (
	OrderingGlobal    Ordering = "global"    // one merged order across partitions and topics (the default)
	OrderingPartition Ordering = "partition" // each partition in its own order, partitions in parallel
)

// OnError is what a projection does with an event it cannot decode or apply.
type OnError string

// The error policies.
const (
	OnErrorFail       OnError = "fail"        // stop the version in state failed (the default)
	OnErrorSkip       OnError = "skip"        // count the event and go on
	OnErrorDeadLetter OnError = "dead_letter" // copy the record to the dead-letter topic and go on
)

var (
	formats   = []string{string(FormatJSON), string(FormatCloudEvents)}
	orderings = []string{string(OrderingGlobal), string(OrderingPartition)}
	onErrors  = []string{string(OnErrorFail), string(OnErrorSkip), string(OnErrorDeadLetter)}
)

func (f Format) valid() bool   { return slices.Contains(formats, string(f)) }
func (o Ordering) valid() bool { return slices.Contains(orderings, string(o)) }
func (o OnError) valid() bool  { return slices.Contains(onErrors, string(o)) }

// UnmarshalYAML rejects a format other than json or cloudevents, naming the
// valid values. An empty value means the default.
func (f *Format) UnmarshalYAML(n *yaml.Node) error {
	s, err := enumYAML(n, "format", formats)
	*f = Format(s)
	return err
}

// UnmarshalYAML rejects an ordering other than global or partition, naming
// the valid values. An empty value means the default.
func (o *Ordering) UnmarshalYAML(n *yaml.Node) error {
	s, err := enumYAML(n, "ordering", orderings)
	*o = Ordering(s)
	return err
}

// UnmarshalYAML rejects a policy other than fail, skip or dead_letter, naming
// the valid values. An empty value means the default.
func (o *OnError) UnmarshalYAML(n *yaml.Node) error {
	s, err := enumYAML(n, "on_error", onErrors)
	*o = OnError(s)
	return err
}

// enumYAML decodes a scalar that must be empty or one of valid. Errors are
// *yaml.TypeError values, so that the YAML decoder reports them with every
// other problem of the document instead of stopping at the first one.
func enumYAML(n *yaml.Node, what string, valid []string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want one of %s, got %s", n.Line, strings.Join(valid, ", "), nodeKind(n))}}
	}
	if err := enumValue(what, n.Value, valid); err != nil {
		return "", &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	return n.Value, nil
}

// enumValue checks that s is empty (the default) or one of valid.
func enumValue(what, s string, valid []string) error {
	if s == "" || slices.Contains(valid, s) {
		return nil
	}
	return fmt.Errorf("unknown %s %q (valid: %s)", what, s, strings.Join(valid, ", "))
}

// Source is a Kafka topic that projections read, and how its records are
// decoded.
type Source struct {
	Topic  string     `yaml:"topic" json:"topic"`
	Format Format     `yaml:"format" json:"format"` // Defaults to "json".
	Fields FieldNames `yaml:"fields" json:"fields"` // format json only. Defaults to id, type, aggregate_id, version, created_at, data.
	// Partitions is the partition count when the embedded broker creates
	// the topic. It is not part of a Definition. Defaults to 8.
	Partitions int32 `yaml:"partitions" json:"-"`
}

// FieldNames are the JSON field names of the envelope of a json source.
type FieldNames struct {
	ID          string `yaml:"id" json:"id"`                     // Defaults to "id".
	Type        string `yaml:"type" json:"type"`                 // Defaults to "type".
	AggregateID string `yaml:"aggregate_id" json:"aggregate_id"` // Defaults to "aggregate_id".
	Version     string `yaml:"version" json:"version"`           // Defaults to "version".
	CreatedAt   string `yaml:"created_at" json:"created_at"`     // Defaults to "created_at".
	Data        string `yaml:"data" json:"data"`                 // Defaults to "data".
}

// defaultFieldNames are the envelope field names of a json source that does
// not rename them.
var defaultFieldNames = FieldNames{
	ID:          "id",
	Type:        "type",
	AggregateID: "aggregate_id",
	Version:     "version",
	CreatedAt:   "created_at",
	Data:        "data",
}

// setDefaults fills the format and, for json sources, the field names and
// the partition count.
func (s *Source) setDefaults() {
	if s.Format == "" {
		s.Format = FormatJSON
	}
	if s.Format == FormatJSON {
		s.Fields.setDefaults()
	}
	if s.Partitions == 0 {
		s.Partitions = 8
	}
}

func (f *FieldNames) setDefaults() {
	def := defaultFieldNames
	for _, p := range []struct {
		v *string
		d string
	}{
		{&f.ID, def.ID}, {&f.Type, def.Type}, {&f.AggregateID, def.AggregateID},
		{&f.Version, def.Version}, {&f.CreatedAt, def.CreatedAt}, {&f.Data, def.Data},
	} {
		if *p.v == "" {
			*p.v = p.d
		}
	}
}

// list returns the field names with their configuration keys, in envelope
// order.
func (f FieldNames) list() [6][2]string {
	return [6][2]string{
		{"id", f.ID}, {"type", f.Type}, {"aggregate_id", f.AggregateID},
		{"version", f.Version}, {"created_at", f.CreatedAt}, {"data", f.Data},
	}
}

// validate checks a source's topic, format and field names, after defaults.
// The partition count is checked by Config.Validate: it is not part of a
// Definition.
func (s Source) validate() []error {
	var errs []error
	if err := validateTopic(s.Topic); err != nil {
		errs = append(errs, err)
	}
	if !s.Format.valid() {
		errs = append(errs, fmt.Errorf("unknown format %q (valid: %s)", s.Format, strings.Join(formats, ", ")))
	}
	switch s.Format {
	case FormatJSON:
		errs = append(errs, s.Fields.validate()...)
	case FormatCloudEvents:
		if s.Fields != (FieldNames{}) {
			errs = append(errs, errors.New("fields apply to format json only; remove fields: (CloudEvents attributes have fixed names)"))
		}
	}
	return errs
}

// validate checks that every field name is set and names its own field.
func (f FieldNames) validate() []error {
	var errs []error
	seen := map[string]string{} // JSON field -> configuration key
	for _, kv := range f.list() {
		key, name := kv[0], kv[1]
		switch {
		case strings.TrimSpace(name) == "":
			errs = append(errs, fmt.Errorf("fields.%s is blank; name the JSON field or remove the key for the default %q", key, defaultField(key)))
		case seen[name] != "":
			errs = append(errs, fmt.Errorf("fields.%s and fields.%s are both %q; each envelope field needs its own JSON field", seen[name], key, name))
		default:
			seen[name] = key
		}
	}
	return errs
}

func defaultField(key string) string {
	for _, f := range defaultFieldNames.list() {
		if f[0] == key {
			return f[1]
		}
	}
	return ""
}

// Projection is a read model: the tables it owns, the statements that apply
// each event type to them, and the sources it reads.
type Projection struct {
	Name     string            `yaml:"name"`
	Ordering Ordering          `yaml:"ordering"` // Defaults to "global".
	OnError  OnError           `yaml:"on_error"` // Defaults to "fail".
	Sources  []string          `yaml:"sources"`  // topics, each declared under the config's sources
	Tables   []string          `yaml:"tables"`   // DDL statements, run with search_path = the version's schema
	Handlers map[string]string `yaml:"handlers"` // event type -> SQL statement with @named arguments
	Checks   []string          `yaml:"checks"`   // queries compared by verify
	// Folds are tables maintained set-based, one statement per batch (opt-in; see Fold).
	Folds []Fold `yaml:"folds"`
	// Reads are relations outside the version's schema (schema.table) that its handlers, folds
	// and checks may read, never write: read-only lookups such as public.currencies. A version
	// can use nothing else outside its own schema. Defaults to none.
	Reads []string `yaml:"reads"`
	// IdleTimeout is how long an empty partition at its end may hold back
	// the merge while live. Defaults to 1s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxLateness is how long, while tailing, the merge of ordering global holds an event for
	// the partitions at their end to show a record at or after it, counted from when the event
	// was received: latency traded for an order that equals a replay's. Nil defaults to
	// DefaultMaxLateness; 0 holds nothing back (an event that arrives behind an applied one is
	// then applied late, and counted). See Lateness.
	MaxLateness *time.Duration `yaml:"max_lateness"`
	// BatchSize is the maximum number of events per transaction. Defaults to 2000, and to
	// DefaultPartitionBatchSize with ordering: partition.
	BatchSize int `yaml:"batch_size"`
	// Workers is the number of parallel appliers for ordering partition.
	// Defaults to 4.
	Workers int `yaml:"workers"`
	// AllowTruncatedHistory lets the automatic first version start at the
	// log start when retention has removed records. Defaults to false.
	AllowTruncatedHistory bool `yaml:"allow_truncated_history"`
	// Code, when set, makes the projection's handlers Go code (package processor/projector):
	// then it has no SQL handlers or folds. Never read from YAML: processor.Options.Projectors
	// sets it. Defaults to nil (SQL handlers).
	Code *Code `yaml:"-"`
}

// DefaultMaxLateness is the default max_lateness: above the skew of producers that commit
// within a second of each other, and small beside a read model's usual freshness.
const DefaultMaxLateness = time.Second

// Lateness is the projection's max_lateness (after SetDefaults; DefaultMaxLateness when unset).
func (p *Projection) Lateness() time.Duration {
	if p.MaxLateness == nil {
		return DefaultMaxLateness
	}
	return *p.MaxLateness
}

// DefaultPartitionBatchSize is the default batch_size of ordering: partition. Its lanes commit
// side by side, and PostgreSQL can prune a row version that a transaction replaced (to make room
// for a HOT update on the same page) only once every transaction that began before it ended: the
// longer the lanes' transactions overlap, the more updates find no room, go to another page and
// add an index entry. Batches of 1,000 over 4 workers kept the bench's updates as HOT as its
// parallel ceiling's (89% against 65% with 2,000, half the buffer accesses per event); see
// docs/PERFORMANCE.md.
const DefaultPartitionBatchSize = 1000

// Limits of the operational knobs of a projection.
const (
	maxBatchSize = 100000
	maxLateness  = time.Minute
	maxWorkers   = 64
)

// setDefaults fills the ordering, the error policy and the operational knobs.
func (p *Projection) setDefaults() {
	if p.Ordering == "" {
		p.Ordering = OrderingGlobal
	}
	if p.OnError == "" {
		p.OnError = OnErrorFail
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = time.Second
	}
	if p.MaxLateness == nil && p.Ordering == OrderingGlobal {
		d := DefaultMaxLateness
		p.MaxLateness = &d
	}
	if p.BatchSize == 0 {
		p.BatchSize = 2000
		if p.Ordering == OrderingPartition {
			p.BatchSize = DefaultPartitionBatchSize
		}
	}
	if p.Workers == 0 {
		p.Workers = 4
	}
}

var (
	projectionNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,44}$`)
	keyRE            = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)
	identifierRE     = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	topicRE          = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
)

// validateProjectionName checks the rule that keeps "<name>_v1" a valid
// replay key.
func validateProjectionName(name string) error {
	if name == "" {
		return errors.New("name is empty; set name: to 1-45 characters from a-z, 0-9 and _, starting with a letter")
	}
	if !projectionNameRE.MatchString(name) || strings.HasPrefix(name, "pg_") {
		return fmt.Errorf("invalid name %q (%d bytes): use 1-45 characters from a-z, 0-9 and _, starting with a letter and not with \"pg_\", so that the first version's replay key %q is a valid schema name", name, len(name), name+"_v1")
	}
	return nil
}

// ValidateKey reports whether key is a valid replay key: the name of a
// projection version and of its schema. A key is 1-48 characters from a-z,
// 0-9 and _, starts with a letter, does not start with "pg_", is not a
// reserved SQL keyword and is none of public, kreplay and information_schema.
func ValidateKey(key string) error {
	if key == "public" || key == "kreplay" || key == "information_schema" {
		return fmt.Errorf("invalid replay key %q: the schema %s already exists with another purpose; choose another key", key, key)
	}
	return validateName(key, nameRule{what: "replay key", max: 48, re: keyRE, other: "key",
		rule: "a replay key is 1-48 characters from a-z, 0-9 and _, starting with a letter"})
}

// nameRule is what validateName checks a name against.
type nameRule struct {
	what, rule string // "replay key", and the rule stated in full
	max        int
	re         *regexp.Regexp
	why        string // why max, if it needs saying
	other      string // "choose another <other>"
}

// validateName checks the rules keys and identifiers share: not empty, at most max bytes, of re's
// characters, not starting with "pg_", not a reserved SQL keyword.
func validateName(s string, r nameRule) error {
	switch {
	case s == "":
		return errors.New(r.what + " is empty; " + r.rule)
	case len(s) > r.max:
		return fmt.Errorf("invalid %s %q: %d bytes is too long%s; %s", r.what, s, len(s), r.why, r.rule)
	case !r.re.MatchString(s):
		return fmt.Errorf("invalid %s %q: %s", r.what, s, r.rule)
	case strings.HasPrefix(s, "pg_"):
		return fmt.Errorf("invalid %s %q: names starting with \"pg_\" are reserved by PostgreSQL", r.what, s)
	case reservedKeywords[s]:
		return fmt.Errorf("invalid %s %q: a reserved SQL keyword; choose another %s", r.what, s, r.other)
	}
	return nil
}

// ValidateIdentifier reports whether s is a PostgreSQL identifier kreplay
// accepts for schemas and roles: 1-63 characters from a-z, 0-9 and _, not
// starting with a digit or with "pg_", and not a reserved SQL keyword. Such a
// name means the same quoted and unquoted.
func ValidateIdentifier(s string) error {
	return validateName(s, nameRule{what: "identifier", max: 63, re: identifierRE, other: "name",
		why:  " (PostgreSQL truncates names to 63 bytes)",
		rule: "an identifier is 1-63 characters from a-z, 0-9 and _, not starting with a digit (PostgreSQL folds unquoted names to lower case)"})
}

// reservedKeywords are PostgreSQL's reserved key words, including those that
// can only be function or type names: none of them works unquoted as a schema
// or role name.
var reservedKeywords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`
		all analyse analyze and any array as asc asymmetric authorization binary both
		case cast check collate collation column concurrently constraint create cross
		current_catalog current_date current_role current_schema current_time
		current_timestamp current_user default deferrable desc distinct do else end
		except false fetch for foreign freeze from full grant group having ilike in
		initially inner intersect into is isnull join lateral leading left like limit
		localtime localtimestamp natural not notnull null offset on only or order outer
		overlaps placing primary references returning right select session_user similar
		some symmetric system_user table tablesample then to trailing true union unique
		user using variadic verbose when where window with`) {
		m[w] = true
	}
	return m
}()

// validateReads checks the read-only lookups of a projection: schema.table names (each an
// identifier as ValidateIdentifier accepts it), listed once, outside kreplay's catalog.
func validateReads(reads []string) []error {
	var errs []error
	seen := map[string]bool{}
	for i, r := range reads {
		schema, table, ok := strings.Cut(strings.TrimSpace(r), ".")
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("reads[%d] %q: name the relation with its schema, such as public.currencies", i, r))
			continue
		case seen[strings.TrimSpace(r)]:
			errs = append(errs, fmt.Errorf("reads[%d] %q is listed twice; list each relation once", i, r))
			continue
		}
		seen[strings.TrimSpace(r)] = true
		for _, part := range []string{schema, table} {
			if err := ValidateIdentifier(part); err != nil {
				errs = append(errs, fmt.Errorf("reads[%d] %q: %w", i, r, err))
			}
		}
		switch schema {
		case "kreplay":
			errs = append(errs, fmt.Errorf("reads[%d] %q: kreplay's catalog is not for projections to read; remove it", i, r))
		case "information_schema":
			errs = append(errs, fmt.Errorf("reads[%d] %q: information_schema is readable without reads:; remove it", i, r))
		}
	}
	return errs
}

// validateTopic checks a Kafka topic name.
func validateTopic(topic string) error {
	if topic == "" {
		return errors.New("topic is empty; set topic:")
	}
	if !topicRE.MatchString(topic) || topic == "." || topic == ".." {
		return fmt.Errorf("invalid topic name %q (%d bytes): use 1-249 characters from a-z, A-Z, 0-9, '.', '_' and '-', other than \".\" and \"..\"", topic, len(topic))
	}
	return nil
}

// Definition is the semantic snapshot of a projection that a version runs:
// everything that decides what the version's tables contain. A version
// stores it when it is created and keeps running it when the config changes.
// The operational knobs (idle_timeout, max_lateness, batch_size, workers,
// allow_truncated_history) are not part of it, and neither is the partition
// count of a source, which is zero in a definition: a definition stored as
// JSON and read back is equal to the original.
type Definition struct {
	Projection string            `json:"projection"`
	Ordering   Ordering          `json:"ordering"`
	OnError    OnError           `json:"on_error"`
	Sources    []Source          `json:"sources"`
	Tables     []string          `json:"tables"`
	Handlers   map[string]string `json:"handlers"`
	Checks     []string          `json:"checks"`
	Folds      []Fold            `json:"folds,omitempty"` // absent when none, so that older hashes hold
	Reads      []string          `json:"reads,omitempty"` // likewise
	Code       *Code             `json:"code,omitempty"`  // Go handlers (see Code); likewise
}

// Definition returns the snapshot of the named projection, with the
// defaults applied, its sources resolved in the projection's order, and the
// surrounding white space of its statements removed (it is not significant,
// and YAML's "|" and "|-" differ only in it).
func (c *Config) Definition(projection string) (Definition, error) {
	p, ok := c.Projection(projection)
	if !ok {
		names := make([]string, len(c.Projections))
		for i, p := range c.Projections {
			names[i] = p.Name
		}
		return Definition{}, fmt.Errorf("projection %q is not declared (declared: %s)", projection, strings.Join(names, ", "))
	}
	d := Definition{
		Projection: p.Name,
		Ordering:   p.Ordering,
		OnError:    p.OnError,
		Sources:    make([]Source, 0, len(p.Sources)),
		Tables:     trimAll(p.Tables),
		Handlers:   make(map[string]string, len(p.Handlers)),
		Checks:     trimAll(p.Checks),
	}
	if d.Ordering == "" {
		d.Ordering = OrderingGlobal
	}
	if d.OnError == "" {
		d.OnError = OnErrorFail
	}
	for _, topic := range p.Sources {
		s, ok := c.Source(topic)
		if !ok {
			return Definition{}, fmt.Errorf("projection %q: source %q is not declared; add it under sources:", p.Name, topic)
		}
		src := *s
		src.setDefaults()
		src.Partitions = 0 // not part of a definition: see Definition
		d.Sources = append(d.Sources, src)
	}
	for typ, sql := range p.Handlers {
		d.Handlers[typ] = strings.TrimSpace(sql)
	}
	if len(p.Reads) > 0 {
		d.Reads = trimAll(p.Reads)
	}
	for _, f := range p.Folds {
		d.Folds = append(d.Folds, trimFold(f))
	}
	d.Code = p.Code.clone()
	return d, nil
}

func trimAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

// Hash identifies the definition: "sha256:" and the hex SHA-256 of its
// canonical JSON (encoding/json of the struct, handler map keys sorted, absent
// lists and maps written as empty ones). It is stable across runs and
// releases, and it changes when the projection's name, ordering, on_error,
// tables, handlers, checks or code version change, or when a source is added,
// removed, reordered or changes its format or field names.
func (d Definition) Hash() string {
	c := d
	if c.Sources == nil {
		c.Sources = []Source{}
	}
	if c.Tables == nil {
		c.Tables = []string{}
	}
	if c.Handlers == nil {
		c.Handlers = map[string]string{}
	}
	if c.Checks == nil {
		c.Checks = []string{}
	}
	b, err := json.Marshal(c)
	if err != nil {
		// Strings, slices and a map of strings always encode.
		panic(fmt.Sprintf("topology: encode definition: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Topics returns the topics of the definition's sources, in order.
func (d Definition) Topics() []string {
	topics := make([]string, len(d.Sources))
	for i, s := range d.Sources {
		topics[i] = s.Topic
	}
	return topics
}

// Source returns the definition's source for topic.
func (d Definition) Source(topic string) (Source, bool) {
	for _, s := range d.Sources {
		if s.Topic == topic {
			return s, true
		}
	}
	return Source{}, false
}

// ParseHandlers parses every handler of the definition with ParseHandler.
// (It cannot be called Handlers: that is the field.)
func (d Definition) ParseHandlers() (map[string]Handler, error) {
	hs := make(map[string]Handler, len(d.Handlers))
	var errs []error
	for _, typ := range slices.Sorted(maps.Keys(d.Handlers)) {
		h, err := ParseHandler(typ, d.Handlers[typ])
		if err != nil {
			errs = append(errs, fmt.Errorf("projection %q: %w", d.Projection, err))
			continue
		}
		hs[typ] = h
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return hs, nil
}

// Validate checks a definition, typically one loaded back from the catalog,
// with the rules Config.Validate applies to a projection. It returns every
// problem found, joined.
func (d Definition) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("projection %q: "+format, append([]any{d.Projection}, args...)...))
	}
	if err := validateProjectionName(d.Projection); err != nil {
		add("%w", err)
	}
	if len(d.Sources) == 0 {
		add("sources: none; a definition reads at least one topic")
	}
	seen := map[string]bool{}
	for i, s := range d.Sources {
		if seen[s.Topic] {
			add("source %q is listed twice; list each topic once", s.Topic)
		}
		seen[s.Topic] = true
		for _, err := range s.validate() {
			add("sources[%d]: %w", i, err)
		}
	}
	for _, err := range validateSemantics(d.Ordering, d.OnError, d.Tables, d.Handlers, d.Checks, d.Folds, d.Reads, d.Code) {
		add("%w", err)
	}
	return errors.Join(errs...)
}

// validateSemantics holds the projection checks shared by Config.Validate
// and Definition.Validate: the enums, tables, handlers (SQL or Go) and checks.
func validateSemantics(ordering Ordering, onError OnError, tables []string, handlers map[string]string, checks []string, folds []Fold, reads []string, code *Code) []error {
	var errs []error
	errs = append(errs, validateReads(reads)...)
	if !ordering.valid() {
		errs = append(errs, fmt.Errorf("unknown ordering %q (valid: %s)", ordering, strings.Join(orderings, ", ")))
	}
	if !onError.valid() {
		errs = append(errs, fmt.Errorf("unknown on_error %q (valid: %s)", onError, strings.Join(onErrors, ", ")))
	}
	if len(tables) == 0 {
		errs = append(errs, errors.New("tables: none; add the CREATE TABLE statements of the read model under tables:"))
	}
	for i, t := range tables {
		if strings.TrimSpace(t) == "" {
			errs = append(errs, fmt.Errorf("tables[%d] is blank; write a DDL statement or remove the entry", i))
		} else if err := checkStatement(t); err != nil {
			errs = append(errs, fmt.Errorf("tables[%d]: %w", i, err))
		}
	}
	switch {
	case code != nil:
		if len(handlers) > 0 || len(folds) > 0 {
			errs = append(errs, errors.New("a projection with Go handlers (a projector) has no SQL handlers or folds; queue those statements from its Go handlers"))
		}
		errs = append(errs, code.validate()...)
	case len(handlers) == 0 && len(folds) == 0:
		errs = append(errs, errors.New("handlers: none; map at least one event type to a SQL statement under handlers: (or declare folds:)"))
	}
	tablesSeen := map[string]bool{}
	for i, f := range folds {
		if tablesSeen[f.Table] {
			errs = append(errs, fmt.Errorf("folds[%d]: table %q has two folds; fold all of its columns in one", i, f.Table))
		}
		tablesSeen[f.Table] = true
		errs = append(errs, f.validate()...)
	}
	for _, typ := range slices.Sorted(maps.Keys(handlers)) {
		sql := handlers[typ]
		switch {
		case strings.TrimSpace(typ) == "":
			errs = append(errs, fmt.Errorf("handler %q: blank event type; use the event's type as the key", typ))
		case strings.TrimSpace(sql) == "":
			errs = append(errs, fmt.Errorf("handler %q: blank SQL; write the statement that applies the event, or remove the handler", typ))
		default:
			if _, err := ParseHandler(typ, sql); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i, c := range checks {
		if strings.TrimSpace(c) == "" {
			errs = append(errs, fmt.Errorf("checks[%d] is blank; write a query or remove the entry", i))
		} else if err := checkStatement(c); err != nil {
			errs = append(errs, fmt.Errorf("checks[%d]: %w", i, err))
		}
	}
	return errs
}
