package processor

import "time"

// The tests do not wait 30s for a version that writes outside its schema to fail (nothing in them
// relies on the 30s).
func init() { deniedBeforeFailing = 2 * time.Second }

// Kill stops a running processor as a crash would, as far as a process can do it to itself:
// batches in flight are aborted (their transactions roll back) and nothing more is committed to
// Kafka. cancel is the function that cancels the context Run was given.
func Kill(p *Processor, cancel func()) {
	p.abrupt.Store(true)
	cancel()
}
