package processor

import (
	"container/heap"
	"time"
)

// The merge step of ordering: global. Within a partition records keep their log order; across
// partitions and topics a version sees one merged order: the k-way merge of the partitions'
// heads by (created_at, version, topic, partition, offset). The merge emits the smallest head
// only when every partition either has a head or is known to be at its end, so a replay of a
// given log is deterministic. While live, an empty partition that is not known to be at its end
// (its records are slow to arrive) is waited for during idle_timeout at most; then it is idle and
// no longer holds the others back.
//
// While tailing, a partition at its end has not yet shown what it will hold next: a producer that is
// behind the others may still write an event that sorts before the smallest head. So the merge
// holds that head until every partition at its end has shown a record at or after it (it then has
// a head, which the heap orders), or for max_lateness at most, counted in processing time from
// when the head was received (producers' clocks and created_at can be anything). A partition
// that verify holds (see partition.hold) is treated the same way: its record at the hold offset,
// if already received, orders the merge like any head, so that a hold never lets the other
// partitions run ahead of the merge order. max_lateness 0 holds nothing back.
// An event emitted after a greater one was already emitted is late (counted, still applied).

// mergeKey orders events for the merge.
type mergeKey struct {
	sec       int64 // created_at, seconds
	nsec      int32 // created_at, nanoseconds
	version   int64
	topic     int32 // rank of the topic name among the version's topics
	partition int32
	offset    int64
}

func newMergeKey(t time.Time, version int64, topicRank, partition int32, offset int64) mergeKey {
	return mergeKey{sec: t.Unix(), nsec: int32(t.Nanosecond()), version: version, topic: topicRank, partition: partition, offset: offset}
}

func (a mergeKey) less(b mergeKey) bool {
	switch {
	case a.sec != b.sec:
		return a.sec < b.sec
	case a.nsec != b.nsec:
		return a.nsec < b.nsec
	case a.version != b.version:
		return a.version < b.version
	case a.topic != b.topic:
		return a.topic < b.topic
	case a.partition != b.partition:
		return a.partition < b.partition
	}
	return a.offset < b.offset
}

// mergeHeap holds the partitions that have an eligible head, smallest head first.
type mergeHeap []*partition

func (h mergeHeap) Len() int           { return len(h) }
func (h mergeHeap) Less(i, j int) bool { return h[i].head().key.less(h[j].head().key) }
func (h mergeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *mergeHeap) Push(x any) {
	p := x.(*partition)
	p.heapIndex = len(*h)
	*h = append(*h, p)
}
func (h *mergeHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.heapIndex = -1
	return p
}

// merger is the merge over one session's partitions. It is not safe for concurrent use: the
// session's lock guards it.
type merger struct {
	parts    []*partition
	heap     mergeHeap
	idle     time.Duration
	lateness time.Duration // max_lateness
	epoch    time.Time     // entries' receipt times count from it (entry.recv)
	live     func() bool   // whether the version has caught up (idle_timeout applies; see blockedBy for max_lateness)
	last     mergeKey
	emitted  bool
	late     int64 // events emitted after a greater one
}

func newMerger(parts []*partition, idle, lateness time.Duration, epoch time.Time, live func() bool) *merger {
	m := &merger{parts: parts, idle: idle, lateness: lateness, epoch: epoch, live: live}
	for _, p := range parts {
		p.heapIndex = -1
	}
	return m
}

// refresh puts partitions that gained an eligible head into the heap.
func (m *merger) refresh() {
	for _, p := range m.parts {
		if p.heapIndex < 0 && p.eligible() {
			heap.Push(&m.heap, p)
		}
	}
}

// blockedBy returns the first partition that holds back the merge's smallest head h at now, and
// when that partition stops holding it back by itself (zero: only new input can unblock it).
//
// A partition with records pending that have not been fetched yet (no eligible head, not held,
// not at its end) holds the merge back: while replaying until its records arrive (so that a
// replay is deterministic); while live for idle_timeout at most (a slow or unavailable partition
// must not stall the others). While h is live (the version is, or h is past its partition's start
// watermark), a partition at its end with nothing queued, or held by verify at a record that
// sorts before h, holds h back until max_lateness after h was received.
// An h that is late already (a greater event was emitted) waits for no lateness: waiting cannot
// put it in order.
func (m *merger) blockedBy(now time.Time, h *entry, from *partition) (*partition, time.Time) {
	live := m.live()
	// h is live when the version is, or when it is past its partition's start watermark (a
	// record produced since the version started: a replay that has caught up in some partitions
	// tails them while it replays the others).
	lateness := m.lateness > 0 && (live || h.item.Event.Offset >= from.target) && (!m.emitted || !h.key.less(m.last))
	var ready time.Time
	if lateness {
		ready = m.epoch.Add(h.recv + m.lateness)
		if !now.Before(ready) {
			lateness = false
		}
	}
	for _, p := range m.parts {
		if p == from || p.heapIndex >= 0 {
			continue // its head, if any, is at or after h: the heap says so
		}
		if p.len() > 0 { // held by verify at its head
			if lateness && p.head().key.less(h.key) {
				return p, ready
			}
			continue
		}
		if p.held() || p.atEnd() {
			if lateness {
				return p, ready
			}
			continue
		}
		if !live {
			return p, time.Time{}
		}
		if until := p.emptySince.Add(m.idle); now.Before(until) {
			return p, until
		}
	}
	return nil, time.Time{}
}

// next pops the next entry in merge order, if the merge may emit one at now. When it may not,
// wake is when it may without new input (zero: wait for input).
func (m *merger) next(now time.Time) (e entry, wake time.Time, ok bool) {
	if len(m.heap) == 0 {
		return entry{}, time.Time{}, false
	}
	p := m.heap[0]
	if b, until := m.blockedBy(now, p.head(), p); b != nil {
		return entry{}, until, false
	}
	e = p.pop(now)
	if p.eligible() {
		heap.Fix(&m.heap, 0)
	} else {
		heap.Remove(&m.heap, 0)
	}
	if m.emitted && e.key.less(m.last) {
		m.late++
	} else {
		m.last = e.key
	}
	m.emitted = true
	return e, time.Time{}, true
}
