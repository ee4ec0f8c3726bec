// Package projector lets a Go program run kreplay with projections whose handlers are Go code,
// and with reactors: Go code run for the events a projection's live version commits, never for a
// replay. The program builds its own binary around package processor, as Kafka Streams or goka
// programs do; kreplay's CLI, control topic, statuses, metrics, HTTP API, verify, promote,
// rollback and remove work for its projections as for the config file's: an operator cannot tell
// them apart.
//
// # A projector
//
// A [Projector] declares what a projection of the config file declares — its name, sources,
// ordering, on_error, tables (DDL), checks, lookups (Reads) and operational settings — with a
// [Handler] per event type instead of a SQL statement, and a Version that names the code:
//
//	balances := &projector.Projector{
//		Name: "balances", Version: "1", Sources: []string{"bank.accounts"},
//		Tables: []string{"CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL)"},
//		Checks: []string{"SELECT coalesce(sum(total), 0) FROM balances"},
//		Handlers: map[string]projector.Handler{
//			"MoneyDeposited": projector.Pipelined(func(b *projector.Batch, ev *projector.Event) error {
//				var d struct{ Amount int64 }
//				if err := json.Unmarshal(ev.Data, &d); err != nil {
//					return err // the event's fault: on_error decides
//				}
//				b.Queue(`INSERT INTO balances AS b VALUES ($1, $2)
//					ON CONFLICT (account_id) DO UPDATE SET total = b.total + EXCLUDED.total`, ev.AggregateID, d.Amount)
//				return nil
//			}),
//		},
//	}
//	cfg, err := topology.ReadFile("kreplay.yaml", os.Getenv) // kafka:, postgres:, sources:
//	...
//	p := processor.New(cfg, processor.Options{Projectors: []*projector.Projector{balances}})
//	err = p.Run(ctx) // serve, with the control topic, statuses, metrics and HTTP of the config
//
// The config file may declare projections of its own, and may leave sources out: a projector's
// topic that sources: does not declare is a json source with the default field names.
// [topology.ReadFile] reads a file without projections (topology.Load refuses one);
// processor.New validates the config with the projectors added, and Run returns what it refuses.
//
// # Two handler styles
//
// Both run inside the batch's transaction, with its checkpoint: an event's effect is committed
// exactly once, whatever crashes, as a SQL handler's.
//
//   - [Pipelined]: the handler queues statements with arguments and reads nothing. kreplay
//     sends them where SQL handlers' statements go, in the batch's single pipeline (one round
//     trip per batch). This is the fast path: in the bank benchmark, the kreplay_code scenario
//     replays as fast as SQL handlers do (0.97 to 1.17 times kreplay_global's rate in four
//     runs; docs/PERFORMANCE.md). The handler runs while the
//     batch is prepared, before the previous batch has committed: it must compute from the event
//     alone, never from the read model.
//   - [Transactional]: the handler is given the batch's transaction (a pgx.Tx on the version's
//     connection), for read-modify-write logic: it sees what the events before it wrote. It is
//     slower: every statement is a round trip, and a batch with such an event is sent as several
//     pipelines around it. Commit and Rollback are kreplay's (refused; tx.Begin gives a
//     savepoint); a COMMIT or ROLLBACK run through SQL fails the version, whatever on_error.
//
// A handler may run more than once for an event (a batch retried after a failure of the
// environment, or split around a poison event), each time in a new transaction, and handlers of
// different events may run concurrently (ordering: partition runs several appliers, and batch
// N+1 is prepared while batch N runs): handlers must have no side effects outside the
// statements they run. Side effects belong in reactors.
//
// # Errors
//
// A handler that returns an error fails its event, and the projection's on_error applies (fail
// the version, skip the event, or dead-letter it), exactly as for a SQL handler refused by
// PostgreSQL — unless the error is the environment's, in which case the batch is rolled back and
// retried with backoff, never skipped, and the version's status says why meanwhile:
//
//   - an error that wraps a PostgreSQL error follows the SQLSTATE rule of SQL handlers: only
//     data exceptions (class 22), integrity constraint violations (class 23) and exceptions
//     raised by user code (P0001) are the event's fault; anything else (a missing column, a
//     privilege, a lost connection, a timeout) is the environment's;
//   - an error that wraps [ErrRetry], a connection failure, context.DeadlineExceeded or
//     context.Canceled is the environment's;
//   - any other Go error (a payload that does not decode, a value out of range) is the event's.
//
// A panic in a handler is the event's fault too (the version fails under on_error: fail, with
// the panic's value and where it happened). A transactional handler that swallows a failed
// statement (returns nil while the transaction is aborted) is retried and said in status, not
// skipped.
//
// # Confinement
//
// A handler only ever gets its version's connection: it is logged in as the version's own
// PostgreSQL role, which owns the version's schema and may write nothing else — not the live
// views, not another version, not kreplay's catalog — whatever the handler runs (RESET ROLE,
// set_config, functions). A statement that writes elsewhere fails with SQLSTATE 42501, the batch
// rolls back with its checkpoint, and the version fails with that reason after retrying for 30
// seconds (a privilege revoked by mistake from a Reads lookup may come back meanwhile): a replay
// can never write the live version. Opening, promoting and dropping versions (the seeds'
// useConnection, promoteConnectionToProduction and removeConnection) is kreplay's job. This
// bounds what kreplay hands a handler, not what Go code can do: a handler could still open a
// connection of its own with credentials it finds; kreplay is no sandbox for hostile code in
// your binary.
//
// # Rolling out a change
//
// A version runs the definition it was created with, and for a projector that includes its code,
// which cannot be snapshotted: a version of a projector runs the Handlers of the projector the
// binary registers under the same Name and its Version. So a change of code is rolled out in
// three binaries' time, as a changed SQL handler is in two configs' time:
//
//  1. Change the handlers and give the projector a new Version ("2"). Roll out a binary that
//     registers both: the new projector under processor.Options.Projectors (what new versions
//     snapshot) and the live version's under PreviousProjectors (what keeps it running). serve
//     reports the drift of the live version, as for a changed config.
//  2. Create, verify and promote the new version with the CLI as usual: kreplay create
//     balances_v2 --projection balances --start; kreplay verify balances_v2; kreplay promote
//     balances_v2. The old version keeps tailing with its own code, for rollback.
//  3. Once the old version is removed (kreplay remove balances_v1), drop its projector from the
//     next binary.
//
// A version whose code the binary does not have does not run on that instance: it does not join
// the version's consumer group (an instance whose binary has the code consumes it), logs an
// error and says in the version's status (error, while it lasts) which versions the binary has
// and how to roll out. It runs again as soon as a binary with its code serves.
//
// # Reactors
//
// A [Reactor] is run for the events of a projection after its live version has committed them:
// emails, webhooks, messages to other systems — side effects that must happen in production and
// never when a read model is rebuilt (the seeds' reactors, prooph's, Axon's @DisallowReplay).
// Register them with processor.Options.Reactors; they work for the config file's projections
// too. What is guaranteed:
//
//   - Only what the live version committed: a reactor reacts to an event once the projection's
//     live version has committed it (its rows are in the live read model), never because a
//     replay, a retired version or any version that is not live applied it.
//   - Never the history: reactors start at the live version's position when a program with
//     reactors for the projection first runs (at its start watermarks while a first version
//     bootstraps), so the events replayed to build the first version are never reacted to; a
//     partition that appears later starts at the live version's start watermark there.
//   - At least once, with a position of its own: the reactors' position per partition
//     (kreplay.reactions, done) moves after the reactions, every 256 events and when they catch
//     up. A crash between a reaction and the move repeats those reactions (at most 256 events per
//     crash); a reactor gets ev.ID to deduplicate. An error is retried with backoff (the
//     projection's reactions wait); a reactor that wants to give up on an event returns nil.
//   - No gap and no repeat across a promotion or a rollback: the bound is the live version's
//     checkpoints, which a promotion only moves forward (a version is made live only once it has
//     applied at least what the live one has), and the position belongs to the projection, not
//     to a version. What the new live version applied while it was a replay, and the old one had
//     not, is reacted to once it is live; what was reacted to is never offered again.
//   - One instance at a time per projection (an advisory lock; the position moves by compare
//     and set), in the projection's merge order below the bound (per partition, offset order).
//     Undecodable records are not handed to reactors; events a handler refused and on_error
//     skipped are (the event happened; the read model failed on it).
//   - The position is the projection's, not a program's: a program that stops registering a
//     projection's reactors and registers them again later resumes where they stopped (delete
//     the projection's rows of kreplay.reactions, with no instance reacting, to start again
//     from the live version's position).
//   - Reactions lag the live version by a poll (200ms, or at once when the live version commits
//     on the same instance); kreplay_reaction_lag_events says by how much.
//
// The instance that reacts reads the projection's topics a second time, with a consumer of its
// own, from the reactors' position: reactions never slow the apply path down.
package projector
