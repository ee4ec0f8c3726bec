package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kreplay/kreplay/store"
)

// deletedAfter is how long a source topic must be reported unknown, in every check, before its
// versions fail: one metadata answer does not tell a deleted topic from a broker that briefly
// does not know it (a new leader loading its metadata).
const deletedAfter = 10 * time.Second

// lostWatch remembers since when each source topic has been reported unknown.
type lostWatch struct {
	mu      sync.Mutex
	missing map[string]time.Time
}

// FailLostRecords fails every running version whose records the brokers no longer have: a
// source topic deleted (unknown for deletedAfter), or created again (its topic id changed), a
// partition whose log now ends before the version's checkpoint (the topic was recreated or
// truncated), or whose log now starts after it (retention deleted records the version had not
// applied, without allow_truncated_history). Each version fails with the reason and the offsets,
// and the rest keeps running. It returns the keys it failed. A check Kafka does not answer is
// skipped.
func (m *Manager) FailLostRecords(ctx context.Context) ([]string, error) {
	versions, err := m.store.Versions(ctx)
	if err != nil {
		return nil, err
	}
	var running []*store.Version
	topicSet := map[string]bool{}
	for _, v := range versions {
		if v.State.Running() {
			running = append(running, v)
			for _, t := range v.Topics() {
				topicSet[t] = true
			}
		}
	}
	if len(running) == 0 {
		return nil, nil
	}
	topics := make([]string, 0, len(topicSet))
	for t := range topicSet {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	// The order matters: log starts, then checkpoints, then log ends. A version advances
	// meanwhile, so a checkpoint read before the ends is at most the end listed after it, and one
	// read after the starts is past any start listed before it that it had applied.
	meta, err := m.admin.Metadata(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	starts, err := m.admin.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	cps, err := m.store.AllCheckpoints(ctx)
	if err != nil {
		return nil, err
	}
	// The high watermarks, not the last stable offsets lag is measured against (EndOffsets): this
	// asks whether the log still holds what was applied, and a checkpoint is never past either.
	ends, err := m.admin.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	ids, err := m.store.SourceTopicIDs(ctx)
	if err != nil {
		return nil, err
	}
	gone := m.deletedTopics(meta, topics)

	var failed []string
	for _, v := range running {
		verr := m.lost(ctx, v, meta, ends, starts, cps[v.Key], ids[v.Key], gone)
		if verr == nil {
			continue
		}
		_, err := m.store.FailVersion(ctx, v.Key, *verr)
		switch {
		case errors.Is(err, store.ErrInvalidTransition):
		case err != nil:
			return failed, err
		default:
			failed = append(failed, v.Key)
			m.log.Error("version failed: the brokers no longer have records it needs; it applies nothing more (create a new replay)",
				"projection", v.Projection, "version", v.Key, "reason", verr.Error())
		}
	}
	return failed, nil
}

// deletedTopics are the topics Kafka has reported unknown in every check for deletedAfter.
func (m *Manager) deletedTopics(meta kadm.Metadata, topics []string) map[string]bool {
	now := time.Now()
	w := &m.lostWatch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.missing == nil {
		w.missing = map[string]time.Time{}
	}
	gone := map[string]bool{}
	for _, t := range topics {
		td, ok := meta.Topics[t]
		if ok && !errors.Is(td.Err, kerr.UnknownTopicOrPartition) && !errors.Is(td.Err, kerr.UnknownTopicID) {
			delete(w.missing, t)
			continue
		}
		since, seen := w.missing[t]
		if !seen {
			w.missing[t] = now
			continue
		}
		gone[t] = now.Sub(since) >= deletedAfter
	}
	return gone
}

// lost is why a running version lost records, nil if it did not.
func (m *Manager) lost(ctx context.Context, v *store.Version, meta kadm.Metadata, ends, starts kadm.ListedOffsets,
	cps []store.Checkpoint, ids map[string]string, gone map[string]bool) *store.VersionError {
	for _, t := range v.Topics() {
		if gone[t] {
			return &store.VersionError{Reason: fmt.Sprintf("source topic %s no longer exists in Kafka (it was deleted, or the broker lost it); the version cannot go on exactly: create a new replay (--topics without it, if it is gone for good)", t),
				Topic: t, Partition: 0, Offset: -1}
		}
		td, ok := meta.Topics[t]
		if !ok || td.Err != nil || td.ID == [16]byte{} { // no id: a broker older than Kafka 2.8
			continue
		}
		id := fmt.Sprintf("%x", td.ID)
		switch known, recorded := ids[t]; {
		case !recorded:
			if err := m.store.RecordSourceTopicID(ctx, v.Key, t, id); err != nil {
				m.retries.Failed("record the topic id of "+t, err)
			}
		case known != id:
			return &store.VersionError{Reason: fmt.Sprintf("source topic %s was created again (its topic id changed from %s to %s): the records this version applied are gone; create a new replay", t, known, id),
				Topic: t, Partition: 0, Offset: -1}
		}
	}
	consumes := map[string]bool{}
	for _, t := range v.Topics() {
		consumes[t] = true
	}
	for _, c := range cps {
		if !consumes[c.Topic] {
			continue
		}
		if end, ok := ends.Lookup(c.Topic, c.Partition); ok && end.Err == nil && end.Offset < c.NextOffset {
			return &store.VersionError{Reason: fmt.Sprintf("the log of %s[%d] now ends at offset %d, before this version's checkpoint %d: records it applied are gone (the topic was recreated or truncated); create a new replay",
				c.Topic, c.Partition, end.Offset, c.NextOffset), Topic: c.Topic, Partition: c.Partition, Offset: c.NextOffset}
		}
		if start, ok := starts.Lookup(c.Topic, c.Partition); ok && start.Err == nil && start.Offset > c.NextOffset && !v.Options.AllowTruncatedHistory {
			return &store.VersionError{Reason: fmt.Sprintf("records %d..%d of %s[%d] were deleted (retention) before this version applied them; it cannot be rebuilt exactly: create a new replay (--since, or --allow-truncated-history)",
				c.NextOffset, start.Offset-1, c.Topic, c.Partition), Topic: c.Topic, Partition: c.Partition, Offset: c.NextOffset}
		}
	}
	return nil
}
