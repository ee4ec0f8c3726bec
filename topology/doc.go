// Package topology is kreplay's configuration: the Kafka topics that hold the
// events (sources), how their records decode into events (the envelope), and
// the read models built from them (projections). It loads and validates
// kreplay.yaml, decodes records, parses handler SQL, and computes the
// definition hash that tells whether a projection version still runs what the
// config says.
//
// The package does no I/O besides reading the config file: the processor
// package consumes Kafka and the store package writes PostgreSQL.
//
// # The config file
//
// Load reads kreplay.yaml (the CLI's --config flag or KREPLAY_CONFIG names
// it), then applies the environment, the defaults, and validation:
//
//	cfg, err := topology.Load("kreplay.yaml", os.Getenv)
//
// Parsing is strict: an unknown key, a value of the wrong shape, an unknown
// enum value or a duration without a unit is an error that names the line
// and the key, such as
//
//	config line 12: unknown key "handler" (known keys here: name, ordering, ...); did you mean "handlers"?
//
// Durations are Go duration strings: "1s", "250ms", "1m30s".
//
// A few deployment settings come from the environment, which overrides the
// file (Config.ApplyEnv):
//
//	KREPLAY_BROKERS          kafka.brokers, comma-separated
//	KREPLAY_DATABASE_URL     postgres.url (DATABASE_URL when unset)
//	KREPLAY_CONTROL_SECRET   control.secret
//	KREPLAY_KAFKA_PASSWORD   kafka.sasl.password
//
// Every setting left empty gets the default its field documents
// (Config.SetDefaults). Config.Validate then reports every problem at once,
// each naming the setting at fault and the fix:
//
//	projection "balances": source "bank.acounts" is not declared; add it under sources: (declared: bank.accounts)
//	projection "balances": handler "MoneyDeposited": unknown argument @amount (valid: @event_id, @type, ...)
//
// # Names
//
// Names from the config end up in SQL and in Kafka, so they are checked
// before use, and are quoted wherever they are used:
//
//   - A projection name is 1-45 characters from a-z, 0-9 and _, starting with
//     a letter and not with "pg_", so that its first version's replay key
//     "<name>_v1" is valid.
//   - A replay key (ValidateKey) is 1-48 such characters, starting with a
//     letter; it names the version's schema, so it is not a reserved SQL
//     keyword, does not start with "pg_" and is none of public, kreplay and
//     information_schema.
//   - Schema and role names (ValidateIdentifier) are 1-63 characters from
//     a-z, 0-9 and _, not starting with a digit or "pg_", and not reserved
//     keywords, so that they mean the same quoted or not.
//   - Topic names follow Kafka: 1-249 characters from a-z, A-Z, 0-9, '.',
//     '_' and '-', other than "." and "..".
//
// # Events and envelopes
//
// Each record of a source topic is one event. NewDecoder returns the
// Decoder of a source's format, json (an object with configurable field
// names) or cloudevents (the CloudEvents Kafka binding, binary and
// structured mode); its documentation lists the rules. A record that does
// not decode gives a *DecodeError naming the topic, partition, offset and
// field, and the processor applies the projection's on_error policy to it.
//
// Decoding is on the hot path of a replay, which decodes millions of
// records, so the decoders use a purpose-built JSON scanner: it validates the
// whole value, keeps the payload as a slice of the record value, interns
// event types, and allocates only the event's id and aggregate id strings. A
// decoder is not safe for concurrent use.
//
// # Handlers
//
// A handler is one PostgreSQL statement per event type, written with pgx
// style named arguments:
//
//	@event_id @type @aggregate_id @version @created_at @data @topic @partition @offset
//
// ParseHandler rewrites them into positional parameters ($1, $2, ...) and
// lists which event value each parameter takes (Handler.Args); @data, the
// payload, is passed as jsonb. Handlers never name a schema: kreplay runs
// them with search_path set to the version's schema.
//
// # Definitions and their hash
//
// A Definition is the part of a projection that decides the contents of its
// tables: ordering, on_error, sources with their envelope settings, tables,
// handlers and checks. A version stores the definition it was created with
// and keeps running it. Definition.Hash identifies it, so that serve can
// report drift between the live version and the config; operational knobs
// (idle_timeout, max_lateness, batch_size, workers, allow_truncated_history) do not change
// the hash.
package topology
