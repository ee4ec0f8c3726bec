package lifecycle

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// Lag has one definition in kreplay, here: a partition's lag is its last stable offset (LSO)
// minus the version's next offset, clamped at 0. kreplay consumes with read_committed, so the
// LSO is the end it can reach: the records of a transaction still open on a source topic (and
// the high watermark past them) are out of reach until it ends, and a version that applied
// everything before the LSO is caught up. A transaction's commit or abort marker occupies an
// offset: the engine applies it as a marker (store.ItemMarker), so the next offset moves past it
// and the lag reaches 0 after a marker too. Status (kreplay status, lag, the gauges, /api/replays),
// promote's --max-lag and auto-promote all use EndOffsets and PartitionLag, and the engine stops
// at the same ends (Bounds, the session's end of a partition).

// PartitionEnd is where a partition ends.
type PartitionEnd struct {
	// Stable is the last stable offset: what a read_committed consumer can reach; lag is
	// measured against it.
	Stable int64
	// HighWatermark is one past the last record written, committed or not. It is past Stable
	// while a transaction is open on the partition.
	HighWatermark int64
}

// PartitionLag is the lag of a partition whose next offset to apply is next. The two offsets are
// read at different moments, so a version may be past the end listed a moment earlier: lag is
// clamped at 0.
func PartitionLag(end PartitionEnd, next int64) int64 { return max(0, end.Stable-next) }

// EndOffsets lists each partition's end for the topics (see PartitionEnd). A partition whose
// last stable offset could not be listed, or a topic that does not exist, is left out and
// reported in the error (the others are returned).
func EndOffsets(ctx context.Context, admin *kadm.Client, topics ...string) (map[store.TopicPartition]PartitionEnd, error) {
	stable, err := admin.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list last stable offsets: %w", err)
	}
	// Listed after the LSOs, so that (both only grow) the high watermark is not below them.
	hwms, err := admin.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list high watermarks: %w", err)
	}
	out := map[store.TopicPartition]PartitionEnd{}
	var firstErr error
	stable.Each(func(o kadm.ListedOffset) {
		if o.Err != nil { // a topic that does not exist has a partition -1 with an error
			if firstErr == nil {
				firstErr = fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err)
			}
			return
		}
		end := PartitionEnd{Stable: o.Offset, HighWatermark: o.Offset}
		if h, ok := hwms.Lookup(o.Topic, o.Partition); ok && h.Err == nil {
			end.HighWatermark = max(h.Offset, o.Offset)
		}
		out[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = end
	})
	return out, firstErr
}

// partitionsLag is a version's position and lag in every partition of its topics that ends
// lists: a partition without a checkpoint (one added since the version started) is at offset 0,
// and one of a version that never started is at 0 too.
func partitionsLag(v *store.Version, ends map[store.TopicPartition]PartitionEnd, cps []store.Checkpoint) []control.PartitionStatus {
	byTP := make(map[store.TopicPartition]store.Checkpoint, len(cps))
	for _, c := range cps {
		byTP[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] = c
	}
	var out []control.PartitionStatus
	for _, t := range v.Topics() {
		for tp, end := range ends {
			if tp.Topic != t {
				continue
			}
			c := byTP[tp]
			out = append(out, control.PartitionStatus{Topic: tp.Topic, Partition: tp.Partition,
				NextOffset: c.NextOffset, TargetOffset: c.TargetOffset,
				LastStableOffset: end.Stable, HighWatermark: end.HighWatermark, Lag: PartitionLag(end, c.NextOffset)})
		}
	}
	return out
}

// Bounds lists, for the topics, each partition's end (last stable offset: see EndOffsets) and
// log start offset. A partition whose end could not be listed is an error.
func Bounds(ctx context.Context, admin *kadm.Client, topics []string) (ends, starts map[store.TopicPartition]int64, err error) {
	listed, err := EndOffsets(ctx, admin, topics...)
	if listed == nil {
		return nil, nil, err
	}
	firstErr := err
	startOffs, err := admin.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, err
	}
	ends, starts = map[store.TopicPartition]int64{}, map[store.TopicPartition]int64{}
	for tp, end := range listed {
		ends[tp] = end.Stable
	}
	startOffs.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			starts[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
		}
	})
	return ends, starts, firstErr
}
