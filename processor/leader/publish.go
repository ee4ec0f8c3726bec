package leader

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/processor/control"
)

// publishOutcome writes a command's outcome to the status topic.
func (l *Leader) publishOutcome(ctx context.Context, out control.Outcome) error {
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	rec := &kgo.Record{Topic: l.cfg.StatusTopic, Key: []byte(control.OutcomeKey(out.CommandID)), Value: b}
	return retry.Policy{Retryable: kafkaconn.Retriable, Log: l.retries, What: "publish a command's outcome"}.Do(ctx, func(ctx context.Context) error {
		return l.producer.ProduceSync(ctx, rec).FirstErr()
	})
}

// statusPublisher remembers what was last published per version, to publish on change and
// otherwise every statusRefresh.
type statusPublisher struct {
	mu   sync.Mutex
	last map[string]publishedStatus
}

type publishedStatus struct {
	fingerprint string
	at          time.Time
}

const statusRefresh = 30 * time.Second

// tombstoned is the fingerprint of a removed version whose status record was cleared.
const tombstoned = "removed"

// PublishStatuses publishes, on the leader only, the statuses that changed (and all of them
// every statusRefresh) and a tombstone for each removed version whose record it has not cleared
// yet. It reports whether this instance leads. One goroutine (the status loop) calls it, so a
// removed version's last status never lands after its tombstone.
func (l *Leader) PublishStatuses(ctx context.Context, statuses []control.Status, removed []string) bool {
	if !l.leading.Load() {
		return false
	}
	now := time.Now()
	var recs []*kgo.Record
	l.published.mu.Lock()
	if l.published.last == nil {
		l.published.last = map[string]publishedStatus{}
	}
	for _, st := range statuses {
		fp := fmt.Sprintf("%s|%d|%d|%d|%.4f|%d|%s|%t|%s|%s|%s", st.State, st.AppliedEvents, st.SkippedEvents, st.LateEvents, st.Progress, st.LagEvents, st.Error, st.Drift, st.LiveVersion, st.PreviousVersion, st.AutoPromoteHeld)
		last := l.published.last[st.Key]
		if last.fingerprint == fp && now.Sub(last.at) < statusRefresh {
			continue
		}
		b, err := json.Marshal(st)
		if err != nil {
			continue
		}
		recs = append(recs, &kgo.Record{Topic: l.cfg.StatusTopic, Key: []byte(st.Key), Value: b})
		l.published.last[st.Key] = publishedStatus{fp, now}
	}
	for _, key := range removed {
		if l.published.last[key].fingerprint != tombstoned {
			recs = append(recs, &kgo.Record{Topic: l.cfg.StatusTopic, Key: []byte(key)})
			l.published.last[key] = publishedStatus{tombstoned, now}
		}
	}
	l.published.mu.Unlock()
	if len(recs) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := l.producer.ProduceSync(pctx, recs...).FirstErr(); err != nil {
			l.retries.Failed("publish status", err)
			l.published.mu.Lock()
			for _, r := range recs {
				delete(l.published.last, string(r.Key))
			}
			l.published.mu.Unlock()
		}
		cancel()
	}
	return true
}
