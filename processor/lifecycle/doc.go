// Package lifecycle is the replay lifecycle as a Go API: a [Manager] creates, starts, pauses,
// resumes, verifies, promotes, rolls back and removes the versions of projections, and reports
// their statuses and lag. The control commands (package leader) are a thin layer over it.
//
// A version's states:
//
//	created -> replaying -> tailing -> live -> retired -> removed   (plus paused and failed)
//
// Every change is one transaction in the catalog (package store), which notifies every
// instance: each instance's runners (package processor) start, stop or hold their consumers
// when they see it. The Manager itself consumes nothing.
//
// # Where things are
//
//   - manager.go: Create, Start, Pause, Resume, Bootstrap (a projection's first version), and
//     where a replay starts (its offsets from zero, --since, or the log start).
//   - promote.go: Promote and Rollback (the view swap is store.Swap).
//   - verify.go: Verify: both versions held at one offset vector, then compared in one snapshot.
//   - remove.go: Remove and the removals a crash interrupted.
//   - status.go, lagtime.go: statuses, lag in events and in seconds.
package lifecycle
