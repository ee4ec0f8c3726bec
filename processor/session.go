package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/internal/startstop"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Queue bounds per partition: fetching a partition is paused when its queue holds its high
// water mark of records and resumed below a quarter of it, so memory does not grow with the
// backlog. The mark is minHighWater, or enough for one and a half batches spread over the
// session's partitions when batches are larger (folds use large batches): the merge then always
// finds a full batch queued.
const minHighWater = 4096

func highWaterFor(batchSize, partitions int) int {
	return max(minHighWater, 3*batchSize/(2*max(1, partitions)))
}

var (
	errVersionFailed = errors.New("version failed")
	errSessionOver   = errors.New("session over")
)

// session is one consumer-group assignment of a version on this instance: the partitions it was
// given in one generation, their queues, and the lanes that merge and apply them. It starts when
// the partitions are assigned (after they are claimed in PostgreSQL) and ends when they are
// revoked or lost, or when the version stops (failed, fenced, paused, removed).
type session struct {
	r      *runner
	gen    int32
	member string
	log    *slog.Logger

	decoders map[string]topology.Decoder // poller goroutine only
	rec      topology.Record             // poller goroutine only: the record being decoded
	fetched  []entry                     // poller goroutine only: one fetch's entries, before they are queued
	parts    map[store.TopicPartition]*partition
	list     []*partition // by topic rank and partition
	lanes    []*lane

	mu      sync.Mutex // guards partitions' queues and positions, and the mergers
	fetchMu sync.Mutex // serialises pausing and resuming fetches (see syncFetch)

	// work owns the lanes' collectors and appliers. Its context is canceled first at a stop (no
	// new batches), with a cause when a lane stops the session itself (see stopItself).
	work *startstop.Group
	// applyCtx is the appliers' context: canceled to abort the batch in flight.
	applyCtx   context.Context
	abortApply context.CancelFunc
	// committer owns the goroutine that mirrors applied offsets to the Kafka group.
	committer  *startstop.Group
	commitKick chan struct{}

	caughtUp      atomic.Bool
	epoch         time.Time // the merge's clock starts here (entry.recv)
	lastCommitted map[store.TopicPartition]int64
	highWater     int
	keepRecords   bool // on_error: dead_letter copies whole records, so queued events keep them
}

func newSession(r *runner, gen int32, member string, starts map[store.TopicPartition]partitionStart) (*session, error) {
	v := r.version()
	cfg := r.p.projectionConfig(v.Projection)
	s := &session{
		r: r, gen: gen, member: member,
		log:           r.log.With("generation", gen),
		decoders:      map[string]topology.Decoder{},
		parts:         map[store.TopicPartition]*partition{},
		commitKick:    make(chan struct{}, 1),
		lastCommitted: map[store.TopicPartition]int64{},
	}
	topics := v.Topics()
	sort.Strings(topics)
	rank := map[string]int32{}
	for i, t := range topics {
		rank[t] = int32(i)
		src, ok := v.Definition.Source(t)
		if !ok {
			return nil, fmt.Errorf("version %s: topic %q is not among its definition's sources", v.Key, t)
		}
		dec, err := topology.NewDecoder(src)
		if err != nil {
			return nil, fmt.Errorf("version %s: %w", v.Key, err)
		}
		s.decoders[t] = dec
	}
	now := time.Now()
	s.epoch = now
	for tp, st := range starts {
		p := &partition{tp: tp, rank: rank[tp.Topic], pos: st.next, end: st.end, hold: -1,
			committed: st.next, target: st.target, heapIndex: -1, emptySince: now}
		s.parts[tp] = p
		s.list = append(s.list, p)
		s.lastCommitted[tp] = st.committed
	}
	sort.Slice(s.list, func(i, j int) bool {
		a, b := s.list[i], s.list[j]
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		return a.tp.Partition < b.tp.Partition
	})
	s.applyHold(v.Hold)
	s.caughtUp.Store(s.allCaughtUp())
	s.highWater = highWaterFor(cfg.BatchSize, len(s.list))
	s.keepRecords = v.Definition.OnError == topology.OnErrorDeadLetter

	nLanes := 1
	if v.Definition.Ordering == topology.OrderingPartition {
		nLanes = min(cfg.Workers, len(s.list))
	}
	for i := range max(nLanes, 1) {
		l := &lane{s: s, idx: i, wake: make(chan struct{}, 1), batches: make(chan laneBatch)}
		s.lanes = append(s.lanes, l)
	}
	for i, p := range s.list {
		p.lane = i % len(s.lanes)
		s.lanes[p.lane].parts = append(s.lanes[p.lane].parts, p)
	}
	for _, l := range s.lanes {
		if v.Definition.Ordering != topology.OrderingPartition {
			l.merger = newMerger(l.parts, cfg.IdleTimeout, cfg.Lateness(), s.epoch, s.caughtUp.Load)
		}
		worker := ""
		if len(s.lanes) > 1 {
			worker = fmt.Sprint(l.idx)
		}
		code, err := r.p.code.handlers(v.Definition, r.p.instance)
		if err != nil {
			return nil, err
		}
		a, err := r.p.store.NewApplier(store.ApplierConfig{Key: v.Key, Definition: v.Definition, EventTypes: v.Options.EventTypes, Worker: worker, Code: code})
		if err != nil {
			return nil, err
		}
		l.applier = a
		l.preps = [2]*store.Prepared{a.NewPrepared(), a.NewPrepared()}
	}
	return s, nil
}

func (s *session) allCaughtUp() bool {
	for _, p := range s.list {
		if p.committed < p.target {
			return false
		}
	}
	return true
}

// applyHold sets each partition's hold from the version's hold (nil: none). Caller holds s.mu or
// the session is not started yet.
func (s *session) applyHold(h store.Hold) {
	for _, p := range s.list {
		p.hold = -1
		if off, ok := h[p.tp.Topic][p.tp.Partition]; ok {
			p.hold = off
		}
	}
}

// setHold updates the holds of a running session and wakes its lanes.
func (s *session) setHold(h store.Hold) {
	s.mu.Lock()
	s.applyHold(h)
	s.mu.Unlock()
	s.wakeAll()
}

func (s *session) wakeAll() {
	for _, l := range s.lanes {
		l.kick()
	}
}

// start runs the lanes and the Kafka committer.
func (s *session) start(ctx context.Context) {
	s.work = startstop.New(ctx)
	s.applyCtx, s.abortApply = context.WithCancel(context.WithoutCancel(ctx))
	for _, l := range s.lanes {
		s.work.Go(l.collect)
		s.work.Go(func(context.Context) {
			if err := l.applyLoop(s.applyCtx); err != nil {
				if !errors.Is(err, errSessionOver) && !errors.Is(err, errVersionFailed) {
					s.log.Error("apply stopped", "err", err)
				}
				s.stopItself(err)
				l.drain()
			}
		})
	}
	s.committer = startstop.New(context.WithoutCancel(ctx))
	s.committer.Go(s.commitLoop)
	s.kickCommit() // the group may lag the checkpoints (see partitionStart.committed)
}

// stopItself records why a lane ended the session, stops the other lanes from collecting and
// wakes the runner's poll, so that the member acts on the reason at once.
func (s *session) stopItself(err error) {
	s.work.CancelWith(err)
	s.r.wake()
}

// stoppedItself is why a lane ended the session, nil if none did.
func (s *session) stoppedItself() error {
	if s.work == nil {
		return nil
	}
	if cause := s.work.Cause(); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// stop ends the session. Graceful: the batch in flight is finished (or rolled back after
// timeout) and the applied offsets are committed to the Kafka group. Not graceful (the
// partitions were lost): the batch in flight is aborted and nothing is committed to Kafka.
func (s *session) stop(graceful bool, timeout time.Duration) {
	s.work.Cancel()
	if !graceful {
		s.abortApply()
	}
	if !s.work.WaitTimeout(timeout) {
		s.log.Warn("batch in flight did not finish in time; rolling it back", "timeout", timeout)
		s.abortApply()
		s.work.Wait()
	}
	s.abortApply()
	s.committer.Stop()
	ctx := context.WithoutCancel(s.work.Context())
	if graceful {
		s.commitKafka(ctx, true)
	}
	for _, l := range s.lanes {
		l.applier.Close(ctx)
	}
}

// push queues the records of one fetched partition (poller goroutine).
func (s *session) push(ftp kgo.FetchTopicPartition) {
	p := s.parts[store.TopicPartition{Topic: ftp.Topic, Partition: ftp.Partition}]
	if p == nil {
		return
	}
	dec := s.decoders[ftp.Topic]
	next := p.pos          // only this goroutine writes pos
	batch := s.fetched[:0] // reused fetch after fetch: cleared once queued
	defer func() {
		clear(batch)
		s.fetched = batch[:0]
	}()
	size := 0
	recv := time.Since(s.epoch)
	for _, rec := range ftp.Records {
		if rec.Offset < next {
			continue // already queued (a refetch)
		}
		// Built in place in the reused slice: a local entry whose Event the decoder is given
		// would escape, one allocation of the whole entry per record.
		batch = append(batch, entry{rec: rec, item: store.Item{Next: rec.Offset + 1}, recv: recv})
		e := &batch[len(batch)-1]
		ev := &e.item.Event
		if rec.Attrs.IsControl() {
			e.item.Kind = store.ItemMarker
		} else if err := dec.Decode(kafkaconn.Record(rec, &s.rec), ev); err != nil {
			e.derr = err
		}
		ev.Topic, ev.Partition, ev.Offset, ev.Timestamp = rec.Topic, rec.Partition, rec.Offset, rec.Timestamp
		if e.item.Kind == store.ItemMarker || e.derr != nil {
			ev.CreatedAt = rec.Timestamp
		}
		e.key = newMergeKey(ev.CreatedAt, ev.Version, p.rank, rec.Partition, rec.Offset)
		size += len(ev.Data)
		next = rec.Offset + 1
	}
	if !s.keepRecords {
		// The payloads alias franz-go's decompressed fetch buffers: copy them into one arena per
		// fetch so that queued events do not hold those buffers, and drop the records (only
		// dead letters need them; an undecodable record is kept).
		arena := make([]byte, 0, size)
		for i := range batch {
			if e := &batch[i]; e.derr == nil {
				start := len(arena)
				arena = append(arena, e.item.Event.Data...)
				e.item.Event.Data = arena[start:len(arena):len(arena)]
				e.rec = nil
			}
		}
	}
	end := ftp.LastStableOffset
	if end < 0 {
		end = ftp.HighWatermark
	}
	pause := false
	s.mu.Lock()
	for _, e := range batch {
		p.push(e)
	}
	p.pos = next
	p.end = max(p.end, end)
	if p.len() >= s.highWater && !p.paused {
		p.paused, pause = true, true
	}
	s.mu.Unlock()
	if pause {
		s.syncFetch([]*partition{p})
	}
	if len(batch) > 0 {
		s.lanes[p.lane].kick()
	}
}

// syncFetch makes the client fetch, or not, each of ps as its paused flag says. The poller pauses
// and a lane resumes, each after releasing s.mu: serialised here, and applying the flag as it is
// now rather than as it was, a resume cannot be overtaken by an older pause (which would leave
// the partition paused for good and, in global order, stall the merge).
func (s *session) syncFetch(ps []*partition) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	var pause, resume map[string][]int32
	s.mu.Lock()
	for _, p := range ps {
		if p.paused == p.fetchOff {
			continue
		}
		p.fetchOff = p.paused
		m := &resume
		if p.paused {
			m = &pause
		}
		if *m == nil {
			*m = map[string][]int32{}
		}
		(*m)[p.tp.Topic] = append((*m)[p.tp.Topic], p.tp.Partition)
	}
	s.mu.Unlock()
	if pause != nil {
		s.r.cl.PauseFetchPartitions(pause)
	}
	if resume != nil {
		s.r.cl.ResumeFetchPartitions(resume)
	}
}
