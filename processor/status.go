package processor

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kreplay/kreplay/store"
)

// Status is a version's status: the `kreplay status -o json` fields, the records of the status
// topic and GET /api/replays.
type Status struct {
	Key             string            `json:"key"`
	Projection      string            `json:"projection"`
	State           string            `json:"state"`
	Live            bool              `json:"live"`
	LiveVersion     string            `json:"live_version"`     // the projection's live version
	PreviousVersion string            `json:"previous_version"` // the one live before it ("" if none)
	AppliedEvents   int64             `json:"applied_events"`
	SkippedEvents   int64             `json:"skipped_events"`
	Progress        float64           `json:"progress"`    // 0..1 of the high watermarks at start
	ETASeconds      *float64          `json:"eta_seconds"` // null when unknown (no rate yet)
	Rate            float64           `json:"rate"`        // events/s over the last minute
	LagEvents       int64             `json:"lag_events"`
	LagSeconds      float64           `json:"lag_seconds"`
	Error           string            `json:"error"`
	DefinitionHash  string            `json:"definition_hash"`
	Drift           bool              `json:"drift"` // the config's definition differs from this version's snapshot
	Options         store.Options     `json:"options"`
	Partitions      []PartitionStatus `json:"partitions,omitempty"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"` // when this status was computed
	RemovedAt       *time.Time        `json:"removed_at,omitempty"`
}

// PartitionStatus is a version's position in one partition.
type PartitionStatus struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	NextOffset    int64  `json:"next_offset"`
	HighWatermark int64  `json:"high_watermark"`
	TargetOffset  int64  `json:"target_offset"`
	Lag           int64  `json:"lag"`
}

// Status computes the status of every version that is not removed (all: removed ones too),
// from the catalog and the brokers' high watermarks.
func (m *Manager) Status(ctx context.Context, all bool) ([]Status, error) {
	versions, err := m.p.store.Versions(ctx)
	if err != nil {
		return nil, err
	}
	projections, err := m.p.store.Projections(ctx)
	if err != nil {
		return nil, err
	}
	cps, err := m.p.store.AllCheckpoints(ctx)
	if err != nil {
		return nil, err
	}
	topicSet := map[string]bool{}
	for _, v := range versions {
		if v.State != store.StateRemoved {
			for _, t := range v.Topics() {
				topicSet[t] = true
			}
		}
	}
	hwms := map[store.TopicPartition]int64{}
	if len(topicSet) > 0 {
		topics := make([]string, 0, len(topicSet))
		for t := range topicSet {
			topics = append(topics, t)
		}
		ends, err := m.p.admin.ListEndOffsets(ctx, topics...)
		if err != nil {
			return nil, fmt.Errorf("list end offsets: %w", err)
		}
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err == nil && o.Partition >= 0 {
				hwms[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
			}
		})
	}
	live := map[string]store.ProjectionRow{}
	for _, pr := range projections {
		live[pr.Name] = pr
	}
	now := time.Now()
	var out []Status
	var peek map[recordAt]bool
	type lagging struct {
		i  int
		at recordAt
	}
	var lags []lagging
	for _, v := range versions {
		if v.State == store.StateRemoved && !all {
			continue
		}
		pr := live[v.Projection]
		st := Status{
			Key: v.Key, Projection: v.Projection, State: string(v.State), Live: pr.Live == v.Key,
			LiveVersion: pr.Live, PreviousVersion: pr.Previous,
			DefinitionHash: v.DefinitionHash, Options: v.Options, CreatedAt: v.CreatedAt, UpdatedAt: now, RemovedAt: v.RemovedAt,
		}
		if def, err := m.p.cfg.Definition(v.Projection); err == nil {
			st.Drift = def.Hash() != v.DefinitionHash
		}
		if v.Error != nil {
			st.Error = v.Error.Error()
		}
		byTP := map[store.TopicPartition]store.Checkpoint{}
		for _, c := range cps[v.Key] {
			byTP[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] = c
		}
		var done, total, remaining int64
		if v.State != store.StateRemoved {
			for _, t := range v.Topics() {
				for tp, hwm := range hwms {
					if tp.Topic != t {
						continue
					}
					c, ok := byTP[tp]
					if !ok && v.State != store.StateCreated {
						c = store.Checkpoint{Topic: tp.Topic, Partition: tp.Partition} // a partition added since the start
					}
					ps := PartitionStatus{Topic: tp.Topic, Partition: tp.Partition, NextOffset: c.NextOffset,
						HighWatermark: hwm, TargetOffset: c.TargetOffset, Lag: max(0, hwm-c.NextOffset)}
					st.Partitions = append(st.Partitions, ps)
					st.LagEvents += ps.Lag
					if ps.Lag > 0 && v.StartedAt != nil {
						at := recordAt{tp, c.NextOffset}
						lags = append(lags, lagging{len(out), at})
						if peek == nil {
							peek = map[recordAt]bool{}
						}
						peek[at] = true
					}
					done += max(0, min(c.NextOffset, c.TargetOffset)-c.StartOffset)
					total += max(0, c.TargetOffset-c.StartOffset)
					remaining += max(0, c.TargetOffset-c.NextOffset)
				}
			}
		}
		for _, c := range cps[v.Key] {
			st.AppliedEvents += c.Applied
			st.SkippedEvents += c.Skipped
		}
		switch {
		case v.StartedAt == nil:
			st.Progress = 0
		case total == 0:
			st.Progress = 1
		default:
			st.Progress = float64(done) / float64(total)
		}
		st.Rate = m.rates.observe(v.Key, now, st.AppliedEvents+st.SkippedEvents)
		switch {
		case v.StartedAt == nil:
		case remaining == 0:
			zero := 0.0
			st.ETASeconds = &zero
		case st.Rate > 0 && v.State.Running():
			eta := float64(remaining) / st.Rate
			st.ETASeconds = &eta
		}
		sort.Slice(st.Partitions, func(i, j int) bool {
			a, b := st.Partitions[i], st.Partitions[j]
			if a.Topic != b.Topic {
				return a.Topic < b.Topic
			}
			return a.Partition < b.Partition
		})
		out = append(out, st)
	}
	if len(peek) > 0 {
		times := m.p.recordTimes(ctx, peek)
		for _, l := range lags {
			if ts, ok := times[l.at]; ok {
				out[l.i].LagSeconds = max(out[l.i].LagSeconds, now.Sub(ts).Seconds(), 0)
			}
		}
	}
	return out, nil
}

// VersionStatus is one version's status.
func (m *Manager) VersionStatus(ctx context.Context, key string) (*Status, error) {
	if _, err := m.version(ctx, key); err != nil {
		return nil, err
	}
	all, err := m.Status(ctx, true)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Key == key {
			return &all[i], nil
		}
	}
	return nil, invalid("unknown replay %q", key)
}

// rateTracker estimates each version's apply rate from samples of its applied count.
type rateTracker struct {
	mu      sync.Mutex
	window  time.Duration
	samples map[string][]rateSample
}

type rateSample struct {
	at time.Time
	n  int64
}

func newRateTracker(window time.Duration) *rateTracker {
	return &rateTracker{window: window, samples: map[string][]rateSample{}}
}

// observe records a sample and returns the rate over the window (events/s).
func (r *rateTracker) observe(key string, at time.Time, n int64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := append(r.samples[key], rateSample{at, n})
	for len(s) > 2 && at.Sub(s[1].at) >= r.window {
		s = s[1:]
	}
	r.samples[key] = s
	first := s[0]
	dt := at.Sub(first.at).Seconds()
	if dt < 0.5 || n < first.n {
		return 0
	}
	return float64(n-first.n) / dt
}

// LagReport is how far a version is behind the brokers: `kreplay lag`.
type LagReport struct {
	Key        string            `json:"key"`
	LagEvents  int64             `json:"lag_events"`
	LagSeconds float64           `json:"lag_seconds"`
	Partitions []PartitionStatus `json:"partitions"`
}

// Lag reports a version's lag: high watermark minus next offset per partition, their sum, and
// the age of its oldest event not applied.
func (m *Manager) Lag(ctx context.Context, key string) (*LagReport, error) {
	st, err := m.VersionStatus(ctx, key)
	if err != nil {
		return nil, err
	}
	return &LagReport{Key: st.Key, LagEvents: st.LagEvents, LagSeconds: st.LagSeconds, Partitions: st.Partitions}, nil
}
