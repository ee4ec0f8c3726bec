// Package leader is the control plane's executing side. Every serve instance runs a [Leader];
// the one that holds a PostgreSQL advisory lock (store.TryLead) leads: it reads the control
// topic (one partition: commands are totally ordered) from the position recorded in the
// catalog, checks each command (signature, shape, first execution of its id), has the engine
// execute it, publishes the outcome on the status topic, and publishes the versions' statuses
// there (PublishStatuses). When the leader's lock connection fails, another instance takes over
// and goes on from the recorded position.
//
// A command id is claimed in the catalog before it runs, so it is executed at most once, even
// when the topic is read again; a repeated id gets its first outcome back, marked duplicate.
//
// The leader knows nothing of consuming or applying: it drives an [Engine] (the processor), so
// that the wire format (package control) and its execution stay apart from the engine.
package leader
