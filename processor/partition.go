package processor

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/store"
)

// entry is one consumed record waiting in its partition's queue.
type entry struct {
	item store.Item  // what the applier writes (Event.Topic/Partition/Offset always set)
	key  mergeKey    // its place in the global order
	rec  *kgo.Record // the record itself, for dead letters
	derr error       // why the record could not be decoded: a poison event
}

// partition is a session's state for one assigned partition: the queue of consumed records and
// what is known of the partition's end. Guarded by the session's lock.
type partition struct {
	tp   store.TopicPartition
	rank int32 // the topic's rank among the version's topics (merge order)
	lane int   // which lane applies it

	q     []entry
	first int

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

func (p *partition) len() int { return len(p.q) - p.first }

// head is the first queued entry (the queue must not be empty).
func (p *partition) head() *entry { return &p.q[p.first] }

func (p *partition) push(e entry) { p.q = append(p.q, e) }

// pop removes and returns the first queued entry.
func (p *partition) pop(now time.Time) entry {
	e := p.q[p.first]
	p.q[p.first] = entry{} // drop references for the GC
	p.first++
	if p.first == len(p.q) {
		p.q, p.first = p.q[:0], 0
		p.emptySince = now
	} else if p.first > 4096 && p.first > len(p.q)/2 {
		n := copy(p.q, p.q[p.first:])
		clear(p.q[n:])
		p.q, p.first = p.q[:n], 0
	}
	return e
}

// atEnd: every record up to the last known end offset has been queued.
func (p *partition) atEnd() bool { return p.end >= 0 && p.pos >= p.end }

// eligible: the partition has a head the merge may emit (not held back by verify).
func (p *partition) eligible() bool {
	return p.len() > 0 && (p.hold < 0 || p.q[p.first].item.Event.Offset < p.hold)
}

// held: verify holds the partition at its hold offset and it has reached it, so the merge does
// not wait for it.
func (p *partition) held() bool {
	if p.hold < 0 {
		return false
	}
	if p.len() > 0 {
		return p.q[p.first].item.Event.Offset >= p.hold
	}
	return p.pos >= p.hold
}
