// Package store is kreplay's PostgreSQL side: the catalog, the schemas of projection versions,
// checkpoints, the apply transaction, the view swap and verification.
//
// # Catalog
//
// The catalog lives in the schema "kreplay" and is created by numbered, embedded migrations
// (migrations/NNN_name.sql) that [Store.Migrate] applies once each, under an advisory lock, so
// that several instances starting together do not race. It holds projections, versions (state,
// definition snapshot, options), checkpoints, promotions, verifications and control commands.
//
// # Versions and views
//
// Every version of a projection has its own schema named after its key, holding the tables of
// its definition. The live schema (postgres.live_schema, "public" by default) holds one view per
// table of the live version: SELECT * FROM <key>.<table>. Readers query the views; promotion
// repoints them in one transaction.
//
// # Confinement
//
// Every version has a PostgreSQL role of its own that owns its schema (role.go explains why a
// login and not SET ROLE). Its tables statements, its appliers and verify's reads of it run on
// connections that log in as that role, so its SQL can write nothing outside its schema: not the
// live views, not another version, not the catalog. [Store.ValidateDefinition] runs a definition
// as a scratch role with the same rights. [Store.EnsureRoles] (serve's start) gives older versions
// their role; [DropDatabase] drops a catalog's roles with its database.
//
// # The apply transaction
//
// An [Applier] owns one connection, logged in as the version's role, whose search_path is the
// version's schema, so handlers never name a schema. A batch of events is sent as one pipeline that PostgreSQL runs as one implicit
// transaction: the handlers' statements, then kreplay.advance, which moves the checkpoints of the
// partitions the batch touched. A crash at any point therefore neither loses nor duplicates an
// event's effect. advance also fences: it refuses the whole batch when the consumer-group
// generation that claimed the partitions (see [Store.Claim]) is no longer the owner.
//
// # Go handlers
//
// A version whose definition has Code (a projector, package processor/projector) is applied by
// the same Applier with the version's [CodeHandlers] (code.go): a pipelined handler queues its
// statements on a [StatementQueue] where SQL handlers' statements go; a batch with a
// transactional handler runs as one explicit transaction (executeTx). What a Go handler returns
// is classified as for SQL handlers (the SQLSTATE rule), with [ErrRetry] for the environment.
//
// # Reactions
//
// The reactors of a projection react to what its live version has committed: their bound is the
// live version's checkpoints, their position is kreplay.reactions (reactions.go, migration 005),
// moved by compare and set ([Store.MoveReactions]) by the one instance that holds the projection's
// lock ([Store.TryReact]).
//
// # Identifiers
//
// Names that come from the config file or from commands (keys, schemas, tables) are validated by
// the topology package and always quoted with pgx.Identifier before they reach SQL; values are
// always parameters.
package store
