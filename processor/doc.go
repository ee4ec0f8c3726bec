// Package processor is kreplay's engine: `kreplay serve` as a Go API. A [Processor] keeps every
// running version of every projection applied from Kafka into PostgreSQL, and hosts the parts
// around it: the control plane's leader (package leader), the HTTP API (package httpapi) and,
// for development, the embedded broker (package embedded).
//
// # Data flow
//
// Data flows one way through a version's member of its consumer group:
//
//	Kafka record -> envelope (topology.Decoder) -> partition queue -> merge (ordering: global)
//	  -> batch -> apply + checkpoint in one PostgreSQL transaction (store.Applier)
//	  -> offsets committed to the Kafka group (for lag tools) -> metrics and status
//
// # Where things are
//
//   - processor.go: New, Run and setup: the parts of serve and their order of start and stop.
//   - reconcile.go: one runner per running version, kept in line with the catalog (LISTEN).
//   - runner.go: a version's member of its consumer group; each assignment is a session.
//     balancer.go holds the sole-owner balancer of ordering: global.
//   - session.go: one assignment: the partitions' queues (partition.go), fetch pausing, and
//     the lanes. lane.go: collect a batch (merge.go for global order), prepare it, apply it,
//     poison events (on_error). commit.go: offsets mirrored to the group.
//   - manager.go, promote.go, verify.go, status.go: the replay lifecycle as a Go API (create,
//     start, pause, resume, promote, rollback, verify, remove, status), which the control
//     commands map to (commands.go).
//   - metrics.go: kreplay's Prometheus metrics; kafka.go: topics and offsets; lagtime.go: the
//     age of the oldest unapplied record (lag seconds).
//   - code.go: the projectors of Options (package projector) added to the config, the code a
//     version runs, and what a version whose code this binary lacks does.
//   - reactions.go: the reactors of a projection, run for what its live version commits.
//
// # Lifecycle
//
// Every long-running part is a startstop.Group: it owns its goroutines and is stopped by
// canceling its context and waiting for them. Run starts, in order: the HTTP server (so that
// /healthz answers while serve waits for its dependencies), the checks against PostgreSQL and
// Kafka, then the reconcile loop, the status loop, the readiness probe and the leader. On
// shutdown the loops stop first, then the runners: each session finishes (or, after the
// shutdown timeout, rolls back) its batch in flight, commits its offsets and leaves the group;
// the HTTP server stops last.
//
// # Exactly once
//
// A batch's rows and its checkpoints are written in one transaction (see package store), and a
// member resumes at the checkpoints, never at the group's committed offsets. A member that lost
// its partitions is fenced by the generation it claimed them with. The README and
// docs/RELIABILITY.md list each guarantee with the test that shows it.
package processor
