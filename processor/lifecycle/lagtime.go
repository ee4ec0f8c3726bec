package lifecycle

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kreplay/kreplay/store"
)

// recordAt names the record at one offset of one partition.
type recordAt struct {
	store.TopicPartition
	Offset int64
}

// recordTimes returns the Kafka timestamps of the records at the given positions (each lagging
// version's first unapplied record), for lag_seconds: the age of the oldest event a version has
// not applied, as Burrow and kminion measure time lag. Several versions may lag on one partition
// at different offsets; a Fetch asks for each partition once, so each round of small Fetches (one
// per leader) asks for one offset of each partition. Results are cached by position, so a
// version stuck at an offset costs nothing more; the cache keeps what the last call asked for.
func (m *Manager) recordTimes(ctx context.Context, want map[recordAt]bool) map[recordAt]time.Time {
	out := map[recordAt]time.Time{}
	missing := map[store.TopicPartition][]int64{}
	m.tsCache.mu.Lock()
	for at := range want {
		if ts, ok := m.tsCache.m[at]; ok {
			out[at] = ts
		} else {
			missing[at.TopicPartition] = append(missing[at.TopicPartition], at.Offset)
		}
	}
	m.tsCache.mu.Unlock()
	if len(missing) > 0 {
		m.fetchRecordTimes(ctx, missing, out)
	}
	m.tsCache.mu.Lock()
	m.tsCache.m = make(map[recordAt]time.Time, len(out))
	maps.Copy(m.tsCache.m, out)
	m.tsCache.mu.Unlock()
	return out
}

// fetchRecordTimes fetches the records at offsets (per partition) and puts their timestamps
// into out.
func (m *Manager) fetchRecordTimes(ctx context.Context, offsets map[store.TopicPartition][]int64, out map[recordAt]time.Time) {
	topics := map[string]bool{}
	for tp := range offsets {
		topics[tp.Topic] = true
	}
	meta, err := m.admin.Metadata(ctx, slices.Collect(maps.Keys(topics))...)
	if err != nil {
		return
	}
	var mu sync.Mutex
	for round := 0; ; round++ {
		byLeader := map[int32]*kmsg.FetchRequest{}
		ids := map[[16]byte]string{}
		asked := map[store.TopicPartition]int64{}
		for tp, offs := range offsets {
			if round >= len(offs) {
				continue
			}
			td, ok := meta.Topics[tp.Topic]
			if !ok || td.Err != nil {
				continue
			}
			pd, ok := td.Partitions[tp.Partition]
			if !ok || pd.Err != nil {
				continue
			}
			ids[td.ID] = tp.Topic
			asked[tp] = offs[round]
			req := byLeader[pd.Leader]
			if req == nil {
				req = kmsg.NewPtrFetchRequest()
				req.ReplicaID = -1
				req.MaxWaitMillis = 0
				req.MinBytes = 1
				req.MaxBytes = 1 << 20
				req.IsolationLevel = 1
				byLeader[pd.Leader] = req
			}
			var rt *kmsg.FetchRequestTopic
			for i := range req.Topics {
				if req.Topics[i].Topic == tp.Topic {
					rt = &req.Topics[i]
				}
			}
			if rt == nil {
				t := kmsg.NewFetchRequestTopic()
				t.Topic, t.TopicID = tp.Topic, td.ID
				req.Topics = append(req.Topics, t)
				rt = &req.Topics[len(req.Topics)-1]
			}
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = tp.Partition, offs[round], 64<<10
			rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		if len(byLeader) == 0 {
			return
		}
		var wg sync.WaitGroup
		for leader, req := range byLeader {
			wg.Go(func() {
				fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				resp, err := m.kafka.Broker(int(leader)).Request(fctx, req)
				if err != nil {
					return
				}
				for _, t := range resp.(*kmsg.FetchResponse).Topics {
					topic := t.Topic
					if topic == "" {
						topic = ids[t.TopicID]
					}
					for i := range t.Partitions {
						rp := &t.Partitions[i]
						tp := store.TopicPartition{Topic: topic, Partition: rp.Partition}
						off, ok := asked[tp]
						if !ok {
							continue
						}
						fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
							KeepControlRecords: true, Offset: off, Topic: topic, Partition: rp.Partition,
						}, rp, kgo.DefaultDecompressor(), nil)
						if len(fp.Records) == 0 {
							continue
						}
						mu.Lock()
						out[recordAt{tp, off}] = fp.Records[0].Timestamp
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
	}
}

type tsCache struct {
	mu sync.Mutex
	m  map[recordAt]time.Time
}
