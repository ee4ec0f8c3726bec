package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
	// committed is the offset the group had committed (-1: none): where lag tools see the
	// version. When it is not next (a member died between its PostgreSQL and Kafka commits),
	// the session commits next at once, so that lag tools converge even if no event comes.
	committed int64
}

func (l *lane) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
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
		s.r.lateUnsaved.Add(late)
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

// applyLoop applies the batches the collector prepares until it stops, or until a batch fails
// for a reason the lane cannot retry (then the caller stops the session and drains).
func (l *lane) applyLoop(ctx context.Context) error {
	for b := range l.batches {
		if err := l.apply(ctx, b.b, b.prep); err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // shutting down: the batch is retried by whoever owns the partitions next
			}
			return err
		}
	}
	return nil
}

// drain empties the lane's batches until the collector, which the session stopped, closes
// them, so that the collector is never blocked on a send.
func (l *lane) drain() {
	for range l.batches { //nolint:revive // draining
	}
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

// timeoutsBeforeFailing is how many attempts in a row of one batch may time out (statement
// timeout) before the version fails: a statement that times out every time will not succeed by
// itself, and its version must say so rather than retry in silence.
const timeoutsBeforeFailing = 5

// deniedBeforeFailing is how long a batch may fail for want of a privilege (SQLSTATE 42501)
// before the version fails. A version's role owns its schema, so such a failure is most often a
// statement that reaches outside it (which no retry fixes); a privilege revoked by mistake on a
// reads: table is fixed within that time, or by resume. (A variable for the tests.)
var deniedBeforeFailing = 30 * time.Second

// execute runs one transaction of entries (send), and records what it applied. A failure that is
// not the events' own (see store.IsPoison) is retried with backoff, without advancing: a
// connection lost, a server restarting, a column renamed away, a privilege revoked, a read-only
// database. While it retries, the version says why in status (error), the log and
// kreplay_apply_retries_total; it goes on by itself once the environment is fixed. A statement
// that times out on every attempt fails the version.
func (l *lane) execute(ctx context.Context, b batch, send func() (store.ApplyResult, error)) error {
	s := l.s
	backoff := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
	timeouts, failures := 0, 0
	var deniedSince time.Time
	for {
		start := time.Now()
		res, err := send()
		if err == nil {
			s.r.p.health.postgres(true, nil)
			s.r.m.batchDuration.Observe(time.Since(start).Seconds())
			s.r.m.batchEvents.Observe(float64(b.len()))
			if failures > 0 {
				s.r.recovered(ctx, failures)
			}
			l.committed(b, res)
			s.r.saveLate(ctx)
			return nil
		}
		var herr *store.HandlerError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &herr):
			return err // the event's own fault: on_error decides (see apply)
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
		}
		failures++
		if errors.Is(err, store.ErrTransactionEnded) {
			it := b.items[0].Event
			verr := store.VersionError{Reason: err.Error() + ": what it committed cannot be told apart from the rest of its batch; replay the projection with a handler that leaves the transaction to kreplay", Topic: it.Topic, Partition: it.Partition, Offset: it.Offset}
			if ferr := s.r.p.catalog("mark the version failed").Do(ctx, func(ctx context.Context) error { return s.r.fail(ctx, verr) }); ferr != nil {
				return ferr
			}
			return errVersionFailed
		}
		if store.IsStatementTimeout(err) {
			timeouts++
		} else {
			timeouts = 0
		}
		if !store.IsPermissionDenied(err) {
			deniedSince = time.Time{}
		} else if deniedSince.IsZero() {
			deniedSince = time.Now()
		}
		var reason string
		switch {
		case timeouts >= timeoutsBeforeFailing:
			reason = fmt.Sprintf("a batch timed out on %d attempts in a row (%v); raise PostgreSQL's statement_timeout for kreplay's roles, or fix what makes the statement slow, then resume", timeouts, err)
		case !deniedSince.IsZero() && time.Since(deniedSince) >= deniedBeforeFailing:
			reason = fmt.Sprintf("a batch was refused for want of a privilege for %s (%v): a version's statements may write only its own schema and read its reads: tables; fix the definition with a new replay, or grant what was revoked, then resume", deniedBeforeFailing, err)
		}
		if reason != "" {
			it := b.items[0].Event
			verr := store.VersionError{Reason: reason, Topic: it.Topic, Partition: it.Partition, Offset: it.Offset}
			if ferr := s.r.p.catalog("mark the version failed").Do(ctx, func(ctx context.Context) error { return s.r.fail(ctx, verr) }); ferr != nil {
				return ferr
			}
			return errVersionFailed
		}
		if store.IsTransient(err) {
			s.r.p.health.postgres(false, err)
		}
		s.r.stalled(ctx, err)
		if !retry.Sleep(ctx, backoff.Next()) {
			return ctx.Err()
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
	s.kickCommit()
	if res.State == store.StateLive {
		s.r.p.kickReactions(s.r.version().Projection)
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
		// A dead letter Kafka refuses (an ACL, a record too large) is the environment's problem:
		// the version waits, says why, and never moves past the record without it.
		for backoff := retry.NewBackoff(time.Second, 30*time.Second); ; {
			err := s.r.p.deadLetter(ctx, v, b.recs[i], ev, derr)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.r.stalled(ctx, err)
			if !retry.Sleep(ctx, backoff.Next()) {
				return ctx.Err()
			}
		}
		s.log.Warn("dead-lettered a poison event (on_error: dead_letter)", where...)
	default:
		detail := derr.Error()
		var decodeErr *topology.DecodeError
		if errors.As(derr, &decodeErr) {
			detail = decodeErr.Detail() // the version error says where
		}
		verr := store.VersionError{Reason: reason + " error: " + detail, Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset}
		if err := s.r.p.catalog("mark the version failed").Do(ctx, func(ctx context.Context) error { return s.r.fail(ctx, verr) }); err != nil {
			return err
		}
		return errVersionFailed
	}
	b.items[i].Kind = store.ItemSkipped
	b.derrs[i] = nil
	return nil
}
