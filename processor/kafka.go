package processor

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kreplay/kreplay/store"
)

// ensureTopics creates the topics kreplay writes when they are missing: the control topic (one
// partition, so that commands are totally ordered), the status topic (compacted: the latest
// status per key) and the dead-letter topic.
func (p *Processor) ensureTopics(ctx context.Context) error {
	k := p.cfg.Kafka
	type want struct {
		name       string
		partitions int32
		configs    map[string]*string
	}
	compact, segment, dirty := "compact", "600000", "0.1"
	wants := []want{
		{k.ControlTopic, 1, nil},
		// Compacted with small segments, so that readers of the latest statuses (the CLI) do not
		// read days of periodic refreshes.
		{k.StatusTopic, 1, map[string]*string{"cleanup.policy": &compact, "segment.ms": &segment, "min.cleanable.dirty.ratio": &dirty}},
		{k.DeadLetterTopic, 1, nil},
	}
	// Create only what is missing: with ACLs, kreplay may read and write these topics without
	// being allowed to create topics.
	names := make([]string, len(wants))
	for i, w := range wants {
		names[i] = w.name
	}
	existing, err := p.admin.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	for _, w := range wants {
		if d, ok := existing[w.name]; ok && d.Err == nil {
			continue
		}
		resp, err := p.admin.CreateTopic(ctx, w.partitions, -1, w.configs, w.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", w.name, err)
		}
	}
	return nil
}

// existingPartitions says which of tps exist in Kafka now (their topic was not deleted).
func (p *Processor) existingPartitions(ctx context.Context, tps []store.TopicPartition) (map[store.TopicPartition]bool, error) {
	var topics []string
	for _, tp := range tps {
		topics = append(topics, tp.Topic)
	}
	md, err := p.admin.Metadata(ctx, topics...)
	if err != nil {
		return nil, err
	}
	out := map[store.TopicPartition]bool{}
	for _, tp := range tps {
		td, ok := md.Topics[tp.Topic]
		switch {
		case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
		case td.Err != nil:
			return nil, fmt.Errorf("metadata of %s: %w", tp.Topic, td.Err)
		default:
			_, out[tp] = td.Partitions[tp.Partition]
		}
	}
	return out, nil
}

// ownersGone reports whether a claim refused for an older generation may be forced: this member
// is in the group and none of the members the checkpoints name as owners are. That happens when
// the group was deleted (or expired while every instance was down) and its generations
// restarted; a genuinely stale member never passes, as the newer owner is still in the group.
func (p *Processor) ownersGone(ctx context.Context, key, group, member string, tps []store.TopicPartition) bool {
	described, err := p.admin.DescribeGroups(ctx, group)
	if err != nil {
		return false
	}
	g, ok := described[group]
	if !ok || g.Err != nil {
		return false
	}
	members := map[string]bool{}
	for _, m := range g.Members {
		members[m.MemberID] = true
	}
	if !members[member] {
		return false
	}
	cps, err := p.store.Checkpoints(ctx, key)
	if err != nil {
		return false
	}
	want := map[store.TopicPartition]bool{}
	for _, tp := range tps {
		want[tp] = true
	}
	for _, c := range cps {
		if want[store.TopicPartition{Topic: c.Topic, Partition: c.Partition}] && c.Member != "" && c.Member != member && members[c.Member] {
			return false
		}
	}
	return true
}
