package processor

import (
	"slices"
)

// Assignments is GET /api/assignments: what this instance consumes now, and whether it leads
// (executes control commands and publishes statuses).
type Assignments struct {
	Instance string `json:"instance"`
	Leader   bool   `json:"leader"`
	// Versions is the number of partitions this instance consumes per version running on it (0
	// when another member of the version's group owns them).
	Versions map[string]int `json:"versions"`
	// Partitions lists them per version and topic, partitions in ascending order ({} when
	// another member owns them).
	Partitions map[string]map[string][]int32 `json:"partitions"`
}

// Assignments are the partitions this instance consumes now, per version running on it.
func (p *Processor) Assignments() Assignments {
	p.mu.Lock()
	runners := make(map[string]*runner, len(p.runners))
	for k, r := range p.runners {
		runners[k] = r
	}
	p.mu.Unlock()
	a := Assignments{
		Instance: p.instance, Leader: p.leading.Load(),
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
