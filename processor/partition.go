package processor

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/store"
)

// entry is one consumed record waiting in its partition's queue.
type entry struct {
	item store.Item    // what the applier writes (Event.Topic/Partition/Offset always set)
	key  mergeKey      // its place in the global order
	rec  *kgo.Record   // the record itself, for dead letters
	derr error         // why the record could not be decoded: a poison event
	recv time.Duration // when it was received, since the merger's epoch (max_lateness)
}

// queueChunk is a piece of a partition's queue. The queue is a list of chunks, recycled through
// chunkPool once consumed: a queue never copies its entries to grow or to move its head, and
// holds no more memory than its entries take (a slice that grew to its largest backlog would
// keep that size, and each growth would leave the old array to the collector).
type queueChunk [256]entry

var chunkPool = sync.Pool{New: func() any { return new(queueChunk) }}

// partition is a session's state for one assigned partition: the queue of consumed records and
// what is known of the partition's end. Guarded by the session's lock.
type partition struct {
	tp   store.TopicPartition
	rank int32 // the topic's rank among the version's topics (merge order)
	lane int   // which lane applies it

	q     []*queueChunk // the queue: q[0][first:], the chunks between, the last one up to tail
	first int
	tail  int
	n     int

	pos        int64     // next offset expected from Kafka (after the last queued record)
	end        int64     // last known end offset (last stable offset); -1 unknown
	emptySince time.Time // since when the queue is empty
	hold       int64     // verify: apply nothing at or past this offset; -1 none
	paused     bool      // fetching should be paused because the queue is full
	fetchOff   bool      // fetching is paused in the client (see session.syncFetch)
	heapIndex  int

	committed int64 // next offset committed to PostgreSQL
	target    int64 // the high watermark the version must reach (from the checkpoint)
}

func (p *partition) len() int { return p.n }

// head is the first queued entry (the queue must not be empty).
func (p *partition) head() *entry { return &p.q[0][p.first] }

func (p *partition) push(e entry) {
	if len(p.q) == 0 || p.tail == len(queueChunk{}) {
		p.q = append(p.q, chunkPool.Get().(*queueChunk))
		p.tail = 0
	}
	p.q[len(p.q)-1][p.tail] = e
	p.tail++
	p.n++
}

// pop removes and returns the first queued entry.
func (p *partition) pop(now time.Time) entry {
	c := p.q[0]
	e := c[p.first]
	c[p.first] = entry{} // drop references for the GC (and for the chunk's next use)
	p.first++
	p.n--
	switch {
	case p.first == len(c): // consumed: recycle it
		chunkPool.Put(c)
		p.q[0] = nil
		p.q, p.first = p.q[1:], 0
		if len(p.q) == 0 {
			p.q, p.tail = nil, 0
		}
	case p.n == 0: // the only chunk, empty: fill it again from its start
		p.first, p.tail = 0, 0
	}
	if p.n == 0 {
		p.emptySince = now
	}
	return e
}

// atEnd: every record up to the last known end offset has been queued.
func (p *partition) atEnd() bool { return p.end >= 0 && p.pos >= p.end }

// eligible: the partition has a head the merge may emit (not held back by verify).
func (p *partition) eligible() bool {
	return p.len() > 0 && (p.hold < 0 || p.head().item.Event.Offset < p.hold)
}

// held: verify holds the partition at its hold offset and it has reached it, so the merge does
// not wait for it.
func (p *partition) held() bool {
	if p.hold < 0 {
		return false
	}
	if p.len() > 0 {
		return p.head().item.Event.Offset >= p.hold
	}
	return p.pos >= p.hold
}
