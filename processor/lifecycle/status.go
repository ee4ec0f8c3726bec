package lifecycle

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// stalledFresh is how long the reason a running version does not advance is shown in status after
// the engine last said it (it says it every 30s while it lasts): a reason older than that was left
// by an instance that stopped.
const stalledFresh = 90 * time.Second

// Status computes the status of every version that is not removed (all: removed ones too),
// from the catalog and the brokers' ends: lag is measured against the last stable offsets (see
// PartitionLag), as promote's and auto-promote's.
func (m *Manager) Status(ctx context.Context, all bool) ([]control.Status, error) {
	versions, err := m.store.Versions(ctx)
	if err != nil {
		return nil, err
	}
	projections, err := m.store.Projections(ctx)
	if err != nil {
		return nil, err
	}
	cps, err := m.store.AllCheckpoints(ctx)
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
	var ends map[store.TopicPartition]PartitionEnd
	if len(topicSet) > 0 {
		topics := make([]string, 0, len(topicSet))
		for t := range topicSet {
			topics = append(topics, t)
		}
		// A topic that cannot be listed (deleted: FailLostRecords fails its versions) leaves
		// its partitions out; the others are shown.
		if ends, err = EndOffsets(ctx, m.admin, topics...); ends == nil {
			return nil, err
		}
	}
	live := map[string]store.ProjectionRow{}
	for _, pr := range projections {
		live[pr.Name] = pr
	}
	now := time.Now()
	var out []control.Status
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
		st := control.Status{
			Key: v.Key, Projection: v.Projection, State: string(v.State), Live: pr.Live == v.Key,
			LiveVersion: pr.Live, PreviousVersion: pr.Previous,
			DefinitionHash: v.DefinitionHash, Options: v.Options, CreatedAt: v.CreatedAt, UpdatedAt: now, RemovedAt: v.RemovedAt,
			LateEvents: v.LateEvents,
		}
		if def, err := m.cfg.Definition(v.Projection); err == nil {
			st.Drift = def.Hash() != v.DefinitionHash
		}
		switch {
		case v.Error != nil:
			st.Error = v.Error.Error()
		case v.Stalled != "" && v.StalledAt != nil && now.Sub(*v.StalledAt) < stalledFresh:
			st.Error = v.Stalled
		}
		var done, total, remaining int64
		if v.State != store.StateRemoved {
			st.Partitions = partitionsLag(v, ends, cps[v.Key])
			byTP := make(map[store.TopicPartition]store.Checkpoint, len(cps[v.Key]))
			for _, c := range cps[v.Key] {
				byTP[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] = c
			}
			for _, ps := range st.Partitions {
				st.LagEvents += ps.Lag
				if ps.Lag > 0 && v.StartedAt != nil {
					at := recordAt{store.TopicPartition{Topic: ps.Topic, Partition: ps.Partition}, ps.NextOffset}
					lags = append(lags, lagging{len(out), at})
					if peek == nil {
						peek = map[recordAt]bool{}
					}
					peek[at] = true
				}
				c := byTP[store.TopicPartition{Topic: ps.Topic, Partition: ps.Partition}]
				done += max(0, min(c.NextOffset, c.TargetOffset)-c.StartOffset)
				total += max(0, c.TargetOffset-c.StartOffset)
				remaining += max(0, c.TargetOffset-c.NextOffset)
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
		times := m.recordTimes(ctx, peek)
		for _, l := range lags {
			if ts, ok := times[l.at]; ok {
				out[l.i].LagSeconds = max(out[l.i].LagSeconds, now.Sub(ts).Seconds(), 0)
			}
		}
	}
	return out, nil
}

// VersionStatus is one version's status.
func (m *Manager) VersionStatus(ctx context.Context, key string) (*control.Status, error) {
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
	return nil, control.Invalid("unknown replay %q", key)
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

// Lag reports a version's lag: last stable offset minus next offset per partition, their sum,
// and the age of its oldest event not applied.
func (m *Manager) Lag(ctx context.Context, key string) (*control.LagReport, error) {
	st, err := m.VersionStatus(ctx, key)
	if err != nil {
		return nil, err
	}
	return &control.LagReport{Key: st.Key, LagEvents: st.LagEvents, LagSeconds: st.LagSeconds, Partitions: st.Partitions}, nil
}
