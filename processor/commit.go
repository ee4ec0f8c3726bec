package processor

import (
	"context"
	"fmt"
	"time"

	"github.com/kreplay/kreplay/store"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitLoop commits the offsets applied in PostgreSQL to the Kafka group, so that standard lag
// tools see every version's progress. Commits are coalesced: the latest offsets win.
func (s *session) commitLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.commitKick:
			s.commitKafka(ctx, false)
		}
	}
}

// commitKafka commits the offsets applied since the last commit (final: all of them), within
// 10s at most.
func (s *session) commitKafka(ctx context.Context, final bool) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	s.mu.Lock()
	for tp, p := range s.parts {
		if p.committed != s.lastCommitted[tp] || (final && p.committed > 0) {
			if offsets[tp.Topic] == nil {
				offsets[tp.Topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: p.committed}
		}
	}
	s.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var commitErr error
	s.r.cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		commitErr = firstCommitError(resp, err)
	})
	if commitErr != nil {
		// The PostgreSQL checkpoints are the truth; a failed Kafka commit only delays lag tools.
		s.log.Debug("commit offsets to the Kafka group failed", "err", commitErr)
		return
	}
	s.mu.Lock()
	for t, ps := range offsets {
		for part, o := range ps {
			s.lastCommitted[store.TopicPartition{Topic: t, Partition: part}] = o.Offset
		}
	}
	s.mu.Unlock()
}

// firstCommitError is the first error of an offset commit, from the request or a partition.
func firstCommitError(resp *kmsg.OffsetCommitResponse, err error) error {
	if err != nil || resp == nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return fmt.Errorf("%s[%d]: %w", t.Topic, p.Partition, err)
			}
		}
	}
	return nil
}

// kickCommit asks the commit loop for a commit (coalesced with any pending one).
func (s *session) kickCommit() {
	select {
	case s.commitKick <- struct{}{}:
	default:
	}
}
