package processor

import (
	"slices"

	"github.com/kreplay/kreplay/processor/httpapi"
)

// Assignments are the partitions this instance consumes now, per version running on it.
func (p *Processor) Assignments() httpapi.Assignments {
	p.mu.Lock()
	runners := make(map[string]*runner, len(p.runners))
	for k, r := range p.runners {
		runners[k] = r
	}
	p.mu.Unlock()
	a := httpapi.Assignments{
		Instance: p.instance, Leader: p.Leading(),
		Versions: make(map[string]int, len(runners)), Partitions: make(map[string]map[string][]int32, len(runners)),
	}
	for k, r := range runners {
		byTopic := r.assignedPartitions()
		n := 0
		for _, ps := range byTopic {
			n += len(ps)
		}
		a.Versions[k] = n
		a.Partitions[k] = byTopic
	}
	return a
}

// assignedPartitions are the partitions this instance consumes for the version now, by topic.
// A session's partitions are fixed when it is created (a new assignment is a new session), so
// they are read without the session's lock.
func (r *runner) assignedPartitions() map[string][]int32 {
	out := map[string][]int32{}
	s := r.session()
	if s == nil {
		return out
	}
	for _, part := range s.list {
		out[part.tp.Topic] = append(out[part.tp.Topic], part.tp.Partition)
	}
	for _, ps := range out {
		slices.Sort(ps)
	}
	return out
}
