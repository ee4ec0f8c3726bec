// Package leader is the control plane's executing side. Every serve instance runs a [Leader];
// the one that holds a PostgreSQL advisory lock (store.TryLead) leads: it reads the control
// topic (one partition: commands are totally ordered) from the position recorded in the
// catalog, checks each command (the installation it addresses, signature, shape, deadline,
// first execution of its id), has the engine execute it, publishes the outcome on the status
// topic, and publishes the versions' statuses there (PublishStatuses). When the leader's lock
// connection fails, another instance takes over and goes on from the recorded position.
//
// A command id is claimed in the catalog before it runs, so it is executed at most once, even
// when the topic is read again; a repeated id gets its first outcome back, marked duplicate. A
// command whose deadline has passed is claimed as expired and never runs; one canceled while
// pending (the leader looks ahead at what it has fetched, cancel.go) is claimed as canceled and
// never runs.
//
// Before serve consumes anything, [Leader.CheckInstallation] makes sure that its catalog holds
// the control and status topics (installation.go): two installations' catalogs on one topic
// are a clash, refused at start with a [ClashError].
//
// The leader knows nothing of consuming or applying: it drives the lifecycle Manager, so
// that the wire format (package control) and its execution stay apart from the engine.
package leader
