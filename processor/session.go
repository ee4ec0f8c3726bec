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

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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
	parts    map[store.TopicPartition]*partition
	list     []*partition // by topic rank and partition
	lanes    []*lane

	mu      sync.Mutex // guards partitions' queues and positions, and the mergers
	fetchMu sync.Mutex // serialises pausing and resuming fetches (see syncFetch)

	collectCtx    context.Context // canceled first: no new batches
	stopCollect   context.CancelFunc
	applyCtx      context.Context // canceled to abort the batch in flight
	abortApply    context.CancelFunc
	wg            sync.WaitGroup
	commitKick    chan struct{}
	committerDone chan struct{}
	caughtUp      atomic.Bool
	stopOnce      sync.Once
	selfStop      chan struct{} // closed when a lane stops the session itself
	reason        atomic.Value  // error: why the session stopped itself
	lastCommitted map[store.TopicPartition]int64
	highWater     int
	keepRecords   bool // on_error: dead_letter copies whole records, so queued events keep them
}

// lane merges (ordering: global) or gathers (ordering: partition) the records of its partitions
// into batches and applies them on a connection of its own. While its applier commits batch N,
// its collector prepares batch N+1.
type lane struct {
	s       *session
	idx     int
	parts   []*partition
	merger  *merger // nil for ordering: partition
	rr      int
	wake    chan struct{}
	batches chan laneBatch
	applier *store.Applier
	bufs    [2]batch
	preps   [2]*store.Prepared // the collector prepares batch N+1 while the applier executes N
	cur     int
	late    int64 // late events already counted
}

// laneBatch is a batch handed from a lane's collector to its applier, and, unless it holds a
// poison record, the batch prepared for PostgreSQL.
type laneBatch struct {
	b    batch
	prep *store.Prepared
}

// batch is a lane's batch: the items in the order they are applied and, by index, each one's
// record (kept for dead letters) and decode error (a poison record).
type batch struct {
	items []store.Item
	recs  []*kgo.Record
	derrs []error
}

func (b *batch) len() int { return len(b.items) }

func (b *batch) reset() {
	clear(b.items) // drop references for the GC
	clear(b.recs)
	clear(b.derrs)
	b.items, b.recs, b.derrs = b.items[:0], b.recs[:0], b.derrs[:0]
}

func (b *batch) add(e entry) {
	b.items = append(b.items, e.item)
	b.recs = append(b.recs, e.rec)
	b.derrs = append(b.derrs, e.derr)
}

// slice is items i..j-1 (sharing the arrays).
func (b batch) slice(i, j int) batch {
	return batch{items: b.items[i:j], recs: b.recs[i:j], derrs: b.derrs[i:j]}
}

func (b *batch) poisoned() bool {
	for _, err := range b.derrs {
		if err != nil {
			return true
		}
	}
	return false
}

type partitionStart struct {
	next, target, end int64
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
		committerDone: make(chan struct{}),
		selfStop:      make(chan struct{}),
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
	for tp, st := range starts {
		p := &partition{tp: tp, rank: rank[tp.Topic], pos: st.next, end: st.end, hold: -1,
			committed: st.next, target: st.target, heapIndex: -1, emptySince: now}
		s.parts[tp] = p
		s.list = append(s.list, p)
		s.lastCommitted[tp] = st.next
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
			l.merger = newMerger(l.parts, cfg.IdleTimeout, s.caughtUp.Load)
		}
		worker := ""
		if len(s.lanes) > 1 {
			worker = fmt.Sprint(l.idx)
		}
		a, err := r.p.store.NewApplier(store.ApplierConfig{Key: v.Key, Definition: v.Definition, EventTypes: v.Options.EventTypes, Worker: worker})
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

func (l *lane) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// start runs the lanes and the Kafka committer.
func (s *session) start(ctx context.Context) {
	s.collectCtx, s.stopCollect = context.WithCancel(ctx)
	s.applyCtx, s.abortApply = context.WithCancel(context.WithoutCancel(ctx))
	for _, l := range s.lanes {
		s.wg.Add(2)
		go func() { defer s.wg.Done(); l.collect(s.collectCtx) }()
		go func() {
			defer s.wg.Done()
			if err := l.applyLoop(s.applyCtx); err != nil {
				if !errors.Is(err, errSessionOver) && !errors.Is(err, errVersionFailed) {
					s.log.Error("apply stopped", "err", err)
				}
				s.stopItself(err)
			}
		}()
	}
	go s.committer()
}

// stopItself records why a lane ended the session and stops the other lanes from collecting.
func (s *session) stopItself(err error) {
	s.stopOnce.Do(func() {
		s.reason.Store(err)
		close(s.selfStop)
		s.stopCollect()
		s.r.wake()
	})
}

// stop ends the session. Graceful: the batch in flight is finished (or rolled back after
// timeout) and the applied offsets are committed to the Kafka group. Not graceful (the
// partitions were lost): the batch in flight is aborted and nothing is committed to Kafka.
func (s *session) stop(graceful bool, timeout time.Duration) {
	s.stopCollect()
	if !graceful {
		s.abortApply()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.log.Warn("batch in flight did not finish in time; rolling it back", "timeout", timeout)
		s.abortApply()
		<-done
	}
	s.abortApply()
	close(s.commitKick)
	<-s.committerDone
	if graceful {
		s.commitKafka(true)
	}
	for _, l := range s.lanes {
		l.applier.Close(context.Background())
	}
}

// push queues the records of one fetched partition (poller goroutine).
func (s *session) push(ftp kgo.FetchTopicPartition) {
	p := s.parts[store.TopicPartition{Topic: ftp.Topic, Partition: ftp.Partition}]
	if p == nil {
		return
	}
	dec := s.decoders[ftp.Topic]
	next := p.pos // only this goroutine writes pos
	batch := make([]entry, 0, len(ftp.Records))
	size := 0
	for _, rec := range ftp.Records {
		if rec.Offset < next {
			continue // already queued (a refetch)
		}
		e := entry{rec: rec, item: store.Item{Next: rec.Offset + 1}}
		ev := &e.item.Event
		if rec.Attrs.IsControl() {
			e.item.Kind = store.ItemMarker
		} else if err := dec.Decode(rec, ev); err != nil {
			e.derr = err
		}
		ev.Topic, ev.Partition, ev.Offset, ev.Timestamp = rec.Topic, rec.Partition, rec.Offset, rec.Timestamp
		if e.item.Kind == store.ItemMarker || e.derr != nil {
			ev.CreatedAt = rec.Timestamp
		}
		e.key = newMergeKey(ev.CreatedAt, ev.Version, p.rank, rec.Partition, rec.Offset)
		size += len(ev.Data)
		batch = append(batch, e)
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

// gather takes the next batch in the lane's order into buf, up to the batch size. wake is when
// the merge may go on without new input (zero: wait for input).
func (l *lane) gather(buf *batch, limit int) (wake time.Time) {
	s := l.s
	now := time.Now()
	var resume []*partition
	s.mu.Lock()
	if l.merger != nil {
		l.merger.refresh()
		for buf.len() < limit {
			e, w, ok := l.merger.next(now)
			if !ok {
				wake = w
				break
			}
			buf.add(e)
		}
	} else {
		for range len(l.parts) {
			p := l.parts[l.rr%len(l.parts)]
			l.rr++
			for buf.len() < limit && p.eligible() {
				buf.add(p.pop(now))
			}
			if buf.len() >= limit {
				break
			}
		}
	}
	for _, p := range l.parts {
		if p.paused && p.len() < s.highWater/4 {
			p.paused = false
			resume = append(resume, p)
		}
	}
	var late int64
	if l.merger != nil {
		late = l.merger.late - l.late
		l.late = l.merger.late
	}
	s.mu.Unlock()
	if resume != nil {
		s.syncFetch(resume)
	}
	if late > 0 {
		s.r.m.late.Add(float64(late))
	}
	return wake
}

// collect gathers batches and hands them to the applier, prepared for PostgreSQL: while the
// applier executes batch N, batch N+1 is gathered and prepared. While the applier is busy, a
// batch keeps growing with newly arrived records, up to the batch size.
func (l *lane) collect(ctx context.Context) {
	defer close(l.batches)
	limit := l.s.r.p.projectionConfig(l.s.r.version().Projection).BatchSize
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		buf := &l.bufs[l.cur]
		buf.reset()
		wake := l.gather(buf, limit)
		if buf.len() == 0 {
			var tc <-chan time.Time
			if !wake.IsZero() {
				timer.Reset(time.Until(wake))
				tc = timer.C
			}
			select {
			case <-l.wake:
			case <-tc:
			case <-ctx.Done():
				return
			}
			continue
		}
		prepared := -1 // buf.len() when last prepared
		for sent := false; !sent; {
			prep := l.preps[l.cur]
			if prepared != buf.len() && !buf.poisoned() {
				l.applier.Prepare(prep, l.s.gen, buf.items)
				prepared = buf.len()
			}
			if prepared != buf.len() {
				prep = nil // a poison record: the applier handles the batch itself
			}
			select {
			case l.batches <- laneBatch{b: *buf, prep: prep}:
				l.cur = 1 - l.cur
				sent = true
			case <-l.wake:
				if buf.len() < limit {
					l.gather(buf, limit)
				}
			case <-ctx.Done():
				return
			}
		}
	}
}

// applyLoop applies the batches the collector prepares until it stops.
func (l *lane) applyLoop(ctx context.Context) error {
	for b := range l.batches {
		if err := l.apply(ctx, b.b, b.prep); err != nil {
			// Drain so that the collector is never blocked on a send.
			go func() {
				for range l.batches {
				}
			}()
			if ctx.Err() != nil {
				return nil //nolint:nilerr // shutting down: the batch is retried by whoever owns the partitions next
			}
			return err
		}
	}
	return nil
}

// apply applies one batch in as few transactions as the on_error policy allows: a poison
// record (undecodable, or refused by its handler) splits it; the part before is applied, the
// poison record is failed, skipped or dead-lettered, and the rest follows.
func (l *lane) apply(ctx context.Context, b batch, prep *store.Prepared) error {
	if prep != nil {
		err := l.execute(ctx, b, func() (store.ApplyResult, error) { return l.applier.Execute(ctx, prep) })
		var herr *store.HandlerError
		if !errors.As(err, &herr) {
			return err
		}
		b.derrs[herr.Index] = herr // the slow path below applies the part before it, then it
	}
	rest := b
	for rest.len() > 0 {
		if rest.derrs[0] != nil {
			if err := l.poison(ctx, rest, 0); err != nil {
				return err
			}
			continue // item 0 is now a skipped item
		}
		n := 1
		for n < rest.len() && rest.derrs[n] == nil {
			n++
		}
		part := rest.slice(0, n)
		err := l.execute(ctx, part, func() (store.ApplyResult, error) { return l.applier.Apply(ctx, l.s.gen, part.items) })
		var herr *store.HandlerError
		switch {
		case errors.As(err, &herr):
			rest.derrs[herr.Index] = herr // applied next turn: the part before it, then it
		case err != nil:
			return err
		default:
			rest = rest.slice(n, rest.len())
		}
	}
	return nil
}

// execute runs one transaction of entries (send), retrying transient failures with backoff, and
// records what it applied.
func (l *lane) execute(ctx context.Context, b batch, send func() (store.ApplyResult, error)) error {
	s := l.s
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		res, err := send()
		if err == nil {
			s.r.p.health.postgres(true, nil)
			s.r.m.batchDuration.Observe(time.Since(start).Seconds())
			s.r.m.batchEvents.Observe(float64(b.len()))
			l.committed(b, res)
			return nil
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, store.ErrAlreadyApplied):
			// An earlier send committed, and its acknowledgement was lost with the connection.
			s.log.Warn("batch was committed by an earlier attempt; not applying it again", "err", err)
			l.committed(b, store.ApplyResult{})
			return nil
		case errors.Is(err, store.ErrFenced):
			s.r.m.fenced.Inc()
			s.log.Warn("fenced: this member's partitions were reassigned; dropping the batch", "err", err)
			return errSessionOver
		case errors.Is(err, store.ErrNotRunning):
			s.log.Info("version stopped running; dropping the batch", "err", err)
			return errSessionOver
		case store.IsTransient(err):
			s.r.p.health.postgres(false, err)
			s.log.Warn("apply failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff = min(backoff*2, 5*time.Second)
		default:
			return err
		}
	}
}

// committed records what a committed batch applied.
func (l *lane) committed(b batch, res store.ApplyResult) {
	s := l.s
	var applied int64
	for i := range b.items {
		if b.items[i].Kind == store.ItemEvent {
			applied++
		}
	}
	s.mu.Lock()
	for i := range b.items {
		it := &b.items[i]
		p := s.parts[store.TopicPartition{Topic: it.Event.Topic, Partition: it.Event.Partition}]
		p.committed = max(p.committed, it.Next)
	}
	wasCaughtUp := s.caughtUp.Load()
	s.caughtUp.Store(s.allCaughtUp())
	s.mu.Unlock()
	s.r.m.applied.Add(float64(applied))
	if !wasCaughtUp && s.caughtUp.Load() {
		s.log.Info("caught up with the start watermarks", "state", res.State)
	}
	s.r.observeState(res.State)
	select {
	case s.commitKick <- struct{}{}:
	default:
	}
}

// poison applies the version's on_error policy to a record that cannot be applied.
func (l *lane) poison(ctx context.Context, b batch, i int) error {
	s := l.s
	v := s.r.version()
	ev := &b.items[i].Event
	derr := b.derrs[i]
	reason := "decode"
	var herr *store.HandlerError
	if errors.As(derr, &herr) {
		reason = "handler"
	}
	policy := v.Definition.OnError
	s.r.m.failed(reason, string(policy)).Inc()
	where := []any{"topic", ev.Topic, "partition", ev.Partition, "offset", ev.Offset, "reason", derr}
	switch policy {
	case topology.OnErrorSkip:
		s.log.Warn("skipping a poison event (on_error: skip)", where...)
	case topology.OnErrorDeadLetter:
		if err := s.r.p.deadLetter(ctx, v, b.recs[i], ev, derr); err != nil {
			return err
		}
		s.log.Warn("dead-lettered a poison event (on_error: dead_letter)", where...)
	default:
		verr := store.VersionError{Reason: fmt.Sprintf("%s error: %v", reason, derr), Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset}
		if err := retry(ctx, func() error { return s.r.fail(ctx, verr) }); err != nil {
			return err
		}
		return errVersionFailed
	}
	b.items[i].Kind = store.ItemSkipped
	b.derrs[i] = nil
	return nil
}

// committer commits the offsets applied in PostgreSQL to the Kafka group, so that standard lag
// tools see every version's progress. Commits are coalesced: the latest offsets win.
func (s *session) committer() {
	defer close(s.committerDone)
	for range s.commitKick {
		s.commitKafka(false)
	}
}

func (s *session) commitKafka(final bool) {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	s.mu.Lock()
	for tp, p := range s.parts {
		if p.committed > s.lastCommitted[tp] || (final && p.committed > 0) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
