// Package faults is kreplay's fault suite: the real binary killed with SIGKILL at random points,
// PostgreSQL backends terminated and the server restarted, Kafka requests failed and leaders
// moved by kfake, a member frozen past its session timeout, and load with readers on the live
// views. Each scenario asserts values computed independently from the log. `make test` runs the
// short versions; `make soak` (KREPLAY_SOAK=1) the long ones, and prints a table.
package faults
