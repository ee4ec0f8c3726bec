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
	parts   []*partition
	heap    mergeHeap
	idle    time.Duration
	live    func() bool // whether the version has caught up (idle_timeout applies)
	last    mergeKey
	emitted bool
	late    int64 // events emitted after a greater one
}

func newMerger(parts []*partition, idle time.Duration, live func() bool) *merger {
	m := &merger{parts: parts, idle: idle, live: live}
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

// blockedBy returns the first partition that holds the merge back at now: it has no eligible
// head, is not held (verify), and is not known to be at its end: records are pending that have
// not been fetched yet. While live, such a partition holds the merge back for idle_timeout at
// most (a slow or unavailable partition must not stall the others); while replaying, until its
// records arrive (so that a replay is deterministic). It also returns when that partition stops
// blocking by itself (zero: only new input can unblock it).
func (m *merger) blockedBy(now time.Time) (*partition, time.Time) {
	live := m.live()
	for _, p := range m.parts {
		if p.heapIndex >= 0 || p.held() || p.atEnd() {
			continue
		}
		if !live {
			return p, time.Time{}
		}
		if ready := p.emptySince.Add(m.idle); now.Before(ready) {
			return p, ready
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
	if p, until := m.blockedBy(now); p != nil {
		return entry{}, until, false
	}
	p := m.heap[0]
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
