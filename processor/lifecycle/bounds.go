package lifecycle

import (
	"context"
	"fmt"

	"github.com/kreplay/kreplay/store"
	"github.com/twmb/franz-go/pkg/kadm"
)

// Bounds lists, for the topics, each partition's end (last stable offset: consumers read
// committed) and log start offset. A partition whose end could not be listed is an error.
func Bounds(ctx context.Context, admin *kadm.Client, topics []string) (ends, starts map[store.TopicPartition]int64, err error) {
	endOffs, err := admin.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, err
	}
	startOffs, err := admin.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, nil, err
	}
	ends, starts = map[store.TopicPartition]int64{}, map[store.TopicPartition]int64{}
	var firstErr error
	endOffs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s[%d]: %w", o.Topic, o.Partition, o.Err)
			}
			return
		}
		ends[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
	})
	startOffs.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			starts[store.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
		}
	})
	return ends, starts, firstErr
}
