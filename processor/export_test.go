package processor

// Kill stops a running processor as a crash would, as far as a process can do it to itself:
// batches in flight are aborted (their transactions roll back) and nothing more is committed to
// Kafka. cancel is the function that cancels the context Run was given.
func Kill(p *Processor, cancel func()) {
	p.abrupt.Store(true)
	cancel()
}
