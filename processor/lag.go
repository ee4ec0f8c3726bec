package processor

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kreplay/kreplay/store"
)

// recordTimes returns the Kafka timestamps of the records at the given offsets (each version's
// first unapplied record), for lag_seconds: the age of the oldest event a version has not
// applied, as Burrow and kminion measure time lag. One small Fetch per leader; results are
// cached by offset, so a version stuck at an offset costs nothing more.
func (p *Processor) recordTimes(ctx context.Context, want map[store.TopicPartition]int64) map[store.TopicPartition]time.Time {
	out := map[store.TopicPartition]time.Time{}
	missing := map[store.TopicPartition]int64{}
	p.tsCache.mu.Lock()
	for tp, off := range want {
		if c, ok := p.tsCache.m[tp]; ok && c.offset == off {
			out[tp] = c.ts
		} else {
			missing[tp] = off
		}
	}
	p.tsCache.mu.Unlock()
	if len(missing) == 0 {
		return out
	}
	topics := map[string]bool{}
	for tp := range missing {
		topics[tp.Topic] = true
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	meta, err := p.admin.Metadata(ctx, names...)
	if err != nil {
		return out
	}
	byLeader := map[int32]*kmsg.FetchRequest{}
	ids := map[[16]byte]string{}
	for tp, off := range missing {
		td, ok := meta.Topics[tp.Topic]
		if !ok || td.Err != nil {
			continue
		}
		pd, ok := td.Partitions[tp.Partition]
		if !ok || pd.Err != nil {
			continue
		}
		ids[td.ID] = tp.Topic
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
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = tp.Partition, off, 64<<10
		rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for leader, req := range byLeader {
		wg.Go(func() {
			fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			resp, err := p.adminCl.Broker(int(leader)).Request(fctx, req)
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
					off, ok := missing[tp]
					if !ok {
						continue
					}
					fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
						KeepControlRecords: true, Offset: off, Topic: topic, Partition: rp.Partition,
					}, rp, kgo.DefaultDecompressor(), nil)
					if len(fp.Records) == 0 {
						continue
					}
					ts := fp.Records[0].Timestamp
					mu.Lock()
					out[tp] = ts
					mu.Unlock()
					p.tsCache.mu.Lock()
					p.tsCache.m[tp] = cachedTS{offset: off, ts: ts}
					p.tsCache.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return out
}

type cachedTS struct {
	offset int64
	ts     time.Time
}

type tsCache struct {
	mu sync.Mutex
	m  map[store.TopicPartition]cachedTS
}
