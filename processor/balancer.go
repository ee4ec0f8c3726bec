package processor

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// soleOwnerBalancer assigns every partition of the group to a single member: a version with
// ordering: global must be merged in one place. The other members stand by; when the owner dies
// (or leaves), the next rebalance gives everything to one of them. It is sticky: the member
// that owned the partitions in the latest generation keeps them, so members joining or leaving
// do not move the work needlessly. It is an eager protocol: every rebalance revokes first.
type soleOwnerBalancer struct{}

func (soleOwnerBalancer) ProtocolName() string { return "kreplay-sole-owner" }
func (soleOwnerBalancer) IsCooperative() bool  { return false }

func (soleOwnerBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 3
	meta.Topics = interests
	meta.Generation = generation
	topics := make([]string, 0, len(current))
	for t := range current {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		owned := kmsg.NewConsumerMemberMetadataOwnedPartition()
		owned.Topic = t
		owned.Partitions = append([]int32(nil), current[t]...)
		meta.OwnedPartitions = append(meta.OwnedPartitions, owned)
	}
	return meta.AppendTo(nil)
}

func (soleOwnerBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	return kgo.ParseConsumerSyncAssignment(assignment)
}

func (b soleOwnerBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	cb, err := kgo.NewConsumerBalancer(b, members)
	if err != nil {
		return nil, nil, err
	}
	return cb, cb.MemberTopics(), nil
}

// Balance gives all partitions to the member that owned partitions in the newest generation,
// else to the first member (members arrive sorted by instance and member ID).
func (soleOwnerBalancer) Balance(cb *kgo.ConsumerBalancer, topics map[string]int32) kgo.IntoSyncAssignment {
	var owner *kmsg.JoinGroupResponseMember
	bestGen := int32(-1)
	cb.EachMember(func(m *kmsg.JoinGroupResponseMember, meta *kmsg.ConsumerMemberMetadata) {
		if owner == nil {
			owner = m
		}
		if len(meta.OwnedPartitions) > 0 && meta.Generation > bestGen {
			owner, bestGen = m, meta.Generation
		}
	})
	plan := cb.NewPlan()
	if owner == nil {
		return plan
	}
	for topic, n := range topics {
		if _, ok := cb.MemberTopics()[topic]; !ok {
			continue
		}
		parts := make([]int32, n)
		for i := range parts {
			parts[i] = int32(i)
		}
		plan.AddPartitions(owner, topic, parts)
	}
	return plan
}
