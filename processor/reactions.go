package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/kafkaconn"
	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Reactions: the reactors of a projection (package projector) run for the events its live
// version has committed, never for what a replay or a version that is not live applies.
//
// What they may react to is bounded by the live version's checkpoints (store.Reactions): a batch
// commits its rows and its checkpoints together, so every event below them is in the live read
// model, and nothing a replay applies moves them. A promotion or a rollback makes live a version
// at or past the live one in every partition (store.Swap refuses otherwise), so the bound never
// goes back: what the new live version applied while it was a replay and the old one had not is
// reacted to once it is live (no gap), and what was reacted to is never offered again (no repeat:
// the reactors' position is per partition of the sources, whatever the version). One instance at a
// time reacts for a projection, holding an advisory lock; it reads the records from Kafka with a
// consumer of its own from the reactors' position (done) up to the bound, in the projection's
// merge order, calls each reactor, and moves done (compare and set) every reactBatch events: a
// crash in between reacts again to at most that many events (at least once).

// reactBatch is how many events the reactors handle between two moves of their position: what a
// crash may make them see twice.
const reactBatch = 256

// reactionPoll is how often an idle feed looks at the live version's checkpoints (a commit of the
// live version on this instance wakes it at once).
const reactionPoll = 200 * time.Millisecond

// reactionFeed runs the reactors of one projection on this instance, when it holds the
// projection's reactions lock.
type reactionFeed struct {
	p          *Processor
	projection string
	reactors   []*projector.Reactor
	kick       chan struct{}
	log        *slog.Logger
	reacted    []prometheus.Counter // per reactor
	errs       []prometheus.Counter // per reactor
	lag        prometheus.Gauge
}

// reactionMetrics are the reactors' metrics, registered when a processor has reactors.
type reactionMetrics struct {
	reacted, errors *prometheus.CounterVec
	lag             *prometheus.GaugeVec
}

func newReactionMetrics(reg prometheus.Registerer) *reactionMetrics {
	m := &reactionMetrics{
		reacted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_reactions_total",
			Help: "Events a reactor reacted to (once each, bar a crash between a reaction and the move of the reactors' position)."}, []string{"projection", "reactor"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_reaction_errors_total",
			Help: "Errors a reactor returned (the event is retried)."}, []string{"projection", "reactor"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_reaction_lag_events",
			Help: "Offsets the live version has committed that the reactors have not reacted to yet (exported by the instance that reacts)."}, []string{"projection"}),
	}
	reg.MustRegister(m.reacted, m.errors, m.lag)
	return m
}

func (p *Processor) newReactionFeed(projection string, reactors []*projector.Reactor) *reactionFeed {
	if p.reactionMetrics == nil {
		p.reactionMetrics = newReactionMetrics(p.reg)
	}
	m := p.reactionMetrics
	f := &reactionFeed{p: p, projection: projection, reactors: reactors, kick: make(chan struct{}, 1),
		log: p.log.With("projection", projection, "part", "reactions"), lag: m.lag.WithLabelValues(projection)}
	for _, r := range reactors {
		f.reacted = append(f.reacted, m.reacted.WithLabelValues(projection, r.Name))
		f.errs = append(f.errs, m.errors.WithLabelValues(projection, r.Name))
	}
	return f
}

// kickReactions wakes the reactions of a projection on this instance (its live version committed
// a batch here).
func (p *Processor) kickReactions(projection string) {
	if f := p.feeds[projection]; f != nil {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// run competes for the projection's reactions lock until ctx ends, and reacts while it holds it.
func (f *reactionFeed) run(ctx context.Context) {
	backoff := retry.NewBackoff(time.Second, 30*time.Second)
	for ctx.Err() == nil {
		l, err := f.p.store.TryReact(ctx, f.projection)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				f.p.retries.Failed("take the reactions of "+f.projection, err)
			}
			retry.Sleep(ctx, backoff.Next())
			continue
		case l == nil: // another instance reacts
			retry.Sleep(ctx, 2*time.Second)
			continue
		}
		f.log.Info("reacting for the projection's live version on this instance")
		err = f.lead(ctx, l)
		l.Release()
		if err != nil && ctx.Err() == nil {
			f.p.retries.Failed("react for "+f.projection, err)
			retry.Sleep(ctx, backoff.Next())
		} else {
			backoff.Reset()
		}
	}
}

// feedPartition is a partition the feed reads: the records fetched and not reacted to yet.
type feedPartition struct {
	tp      store.TopicPartition
	rank    int32
	next    int64 // the next offset to react to
	fetched int64 // the next offset the consumer delivers
	done    int64 // the position recorded in the catalog
	reacted int64 // events reacted to since done was recorded
	bound   int64 // the live version's checkpoint: react below it only
	queue   []feedRecord
	paused  bool
}

type feedRecord struct {
	rec *kgo.Record
	ev  topology.Event
	ok  bool // a decoded event (not a control record, not undecodable)
	key mergeKey
}

// feedQueueMax bounds the records a partition holds past the bound (fetching pauses).
const feedQueueMax = 4096

// lead reacts while this instance holds the lock l, until ctx ends, the lock is lost or another
// instance moved the position (an error then).
func (f *reactionFeed) lead(ctx context.Context, l *store.Leadership) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	var (
		cl       *kgo.Client
		parts    map[store.TopicPartition]*feedPartition
		live     string
		decoders map[string]topology.Decoder
		rec      topology.Record
	)
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	for ctx.Err() == nil {
		key, ranges, err := f.p.store.Reactions(ctx, f.projection)
		if err != nil {
			return err
		}
		if key != live {
			if key != "" {
				v, err := f.p.store.Version(ctx, key)
				if err != nil {
					return err
				}
				if decoders, err = feedDecoders(v.Definition); err != nil {
					return err
				}
			}
			live = key
		}
		var pending int64
		for _, r := range ranges {
			pending += r.Pending()
		}
		f.lag.Set(float64(pending))
		// (Re)start the consumer when the partitions changed or the catalog's positions are not
		// where this feed left them (only when another instance reacted meanwhile).
		if cl == nil || !samePositions(parts, ranges) {
			if cl != nil {
				cl.Close()
				cl = nil
			}
			parts = map[store.TopicPartition]*feedPartition{}
			if len(ranges) > 0 {
				if cl, err = f.consumer(ranges, parts); err != nil {
					return err
				}
			}
		}
		for _, r := range ranges {
			parts[r.TopicPartition].bound = r.Committed
		}
		if pending == 0 {
			select {
			case <-ctx.Done():
			case <-f.kick:
			case <-time.After(reactionPoll):
			}
			continue
		}
		if err := f.react(ctx, cl, parts, decoders, &rec); err != nil {
			return err
		}
	}
	return nil
}

// samePositions reports whether the feed's partitions are the catalog's, each at its position.
func samePositions(parts map[store.TopicPartition]*feedPartition, ranges []store.ReactionRange) bool {
	if len(parts) != len(ranges) {
		return false
	}
	for _, r := range ranges {
		p := parts[r.TopicPartition]
		if p == nil || p.done != r.Done {
			return false
		}
	}
	return true
}

// consumer starts a consumer of its own at the reactors' positions.
func (f *reactionFeed) consumer(ranges []store.ReactionRange, parts map[store.TopicPartition]*feedPartition) (*kgo.Client, error) {
	var topics []string
	for _, r := range ranges {
		if !slices.Contains(topics, r.Topic) {
			topics = append(topics, r.Topic)
		}
	}
	sort.Strings(topics)
	offsets := map[string]map[int32]kgo.Offset{}
	for _, r := range ranges {
		parts[r.TopicPartition] = &feedPartition{tp: r.TopicPartition, rank: int32(slices.Index(topics, r.Topic)),
			next: r.Done, fetched: r.Done, done: r.Done, bound: r.Committed}
		if offsets[r.Topic] == nil {
			offsets[r.Topic] = map[int32]kgo.Offset{}
		}
		offsets[r.Topic][r.Partition] = kgo.NewOffset().At(r.Done)
	}
	opts := append(f.p.kafkaOpts(f.p.cfg.Kafka.ClientID+"-reactions-"+f.projection),
		kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxBytes(4<<20),
		kgo.FetchMaxPartitionBytes(1<<20),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client of the reactions: %w", err)
	}
	return cl, nil
}

// feedDecoders are the decoders of a definition's sources.
func feedDecoders(def topology.Definition) (map[string]topology.Decoder, error) {
	out := map[string]topology.Decoder{}
	for _, s := range def.Sources {
		d, err := topology.NewDecoder(s)
		if err != nil {
			return nil, err
		}
		out[s.Topic] = d
	}
	return out, nil
}

// react reacts to every event below the bounds, in merge order (within a partition, in offset
// order), moving the position every reactBatch events and at the end.
func (f *reactionFeed) react(ctx context.Context, cl *kgo.Client, parts map[store.TopicPartition]*feedPartition,
	decoders map[string]topology.Decoder, rec *topology.Record) error {
	n := 0
	for {
		var head *feedPartition
		needFetch := false
		for _, p := range parts {
			// Records past the bound wait; so do records below the position (fetched again).
			for len(p.queue) > 0 && p.queue[0].rec.Offset < p.next {
				p.queue = p.queue[1:]
			}
			if p.next >= p.bound {
				continue
			}
			if len(p.queue) == 0 {
				if p.fetched >= p.bound { // the records below it are gone (aborted, deleted)
					p.next = p.bound
				} else {
					needFetch = true
				}
				continue
			}
			if p.queue[0].rec.Offset >= p.bound { // records below it are gone (aborted, deleted)
				p.next = p.bound
				continue
			}
			if head == nil || p.queue[0].key.less(head.queue[0].key) {
				head = p
			}
		}
		if needFetch || head == nil {
			if head == nil && !needFetch {
				return f.move(ctx, parts)
			}
			if err := f.fetch(ctx, cl, parts, decoders, rec); err != nil {
				return err
			}
			continue
		}
		r := head.queue[0]
		head.queue = head.queue[1:]
		if r.ok {
			if err := f.reactTo(ctx, &r.ev); err != nil {
				mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				_ = f.move(mctx, parts) // keep what was done
				cancel()
				return err
			}
			head.reacted++
			n++
		}
		head.next = r.rec.Offset + 1
		if n >= reactBatch {
			if err := f.move(ctx, parts); err != nil {
				return err
			}
			n = 0
		}
	}
}

// fetch polls the consumer once and queues what it returns, pausing partitions whose queue is
// full.
func (f *reactionFeed) fetch(ctx context.Context, cl *kgo.Client, parts map[store.TopicPartition]*feedPartition,
	decoders map[string]topology.Decoder, rec *topology.Record) error {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	fetches := cl.PollRecords(pctx, 4096)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fetches.EachError(func(topic string, partition int32, err error) {
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			f.p.retries.Failed("fetch "+topic+" for the reactions of "+f.projection, err, "partition", partition)
		}
	})
	var pause, resume map[string][]int32
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		p := parts[store.TopicPartition{Topic: ftp.Topic, Partition: ftp.Partition}]
		if p == nil {
			return
		}
		dec := decoders[ftp.Topic]
		for _, r := range ftp.Records {
			if r.Offset < p.fetched {
				continue
			}
			p.fetched = r.Offset + 1
			fr := feedRecord{rec: r}
			ev := &fr.ev
			if !r.Attrs.IsControl() && dec != nil && dec.Decode(kafkaconn.Record(r, rec), ev) == nil {
				fr.ok = true
			} else {
				ev.CreatedAt = r.Timestamp
			}
			ev.Topic, ev.Partition, ev.Offset, ev.Timestamp = r.Topic, r.Partition, r.Offset, r.Timestamp
			fr.key = newMergeKey(ev.CreatedAt, ev.Version, p.rank, r.Partition, r.Offset)
			p.queue = append(p.queue, fr)
		}
	})
	for _, p := range parts {
		switch {
		case !p.paused && len(p.queue) >= feedQueueMax:
			p.paused = true
			pause = addTP(pause, p.tp)
		case p.paused && len(p.queue) < feedQueueMax/4:
			p.paused = false
			resume = addTP(resume, p.tp)
		}
	}
	if pause != nil {
		cl.PauseFetchPartitions(pause)
	}
	if resume != nil {
		cl.ResumeFetchPartitions(resume)
	}
	return nil
}

func addTP(m map[string][]int32, tp store.TopicPartition) map[string][]int32 {
	if m == nil {
		m = map[string][]int32{}
	}
	m[tp.Topic] = append(m[tp.Topic], tp.Partition)
	return m
}

// reactTo hands one event to every reactor that reacts to its type, in order, retrying each
// until it succeeds or ctx ends.
func (f *reactionFeed) reactTo(ctx context.Context, ev *topology.Event) error {
	for i, r := range f.reactors {
		if !r.Reacts(ev.Type) {
			continue
		}
		backoff := retry.NewBackoff(100*time.Millisecond, 30*time.Second)
		for {
			err := f.call(ctx, r, ev)
			if err == nil {
				f.reacted[i].Inc()
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.errs[i].Inc()
			f.p.retries.Failed("reactor "+r.Name+" of "+f.projection, err, "event", ev.ID, "topic", ev.Topic, "partition", ev.Partition, "offset", ev.Offset)
			if !retry.Sleep(ctx, backoff.Next()) {
				return ctx.Err()
			}
		}
	}
	return nil
}

// call runs a reactor, turning a panic into its error.
func (f *reactionFeed) call(ctx context.Context, r *projector.Reactor, ev *topology.Event) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("reactor %s panicked: %v", r.Name, v)
		}
	}()
	return r.React(ctx, ev)
}

// move records the partitions' positions in the catalog (compare and set).
func (f *reactionFeed) move(ctx context.Context, parts map[store.TopicPartition]*feedPartition) error {
	var moves []store.ReactionMove
	for _, p := range parts {
		if p.next != p.done {
			moves = append(moves, store.ReactionMove{TopicPartition: p.tp, From: p.done, To: p.next, Reacted: p.reacted})
		}
	}
	err := retry.Policy{Retryable: store.IsTransient, Log: f.p.retries, What: "record the reactions of " + f.projection}.Do(ctx, func(ctx context.Context) error {
		return f.p.store.MoveReactions(ctx, f.projection, moves)
	})
	if err != nil {
		return err
	}
	for _, p := range parts {
		p.done, p.reacted = p.next, 0
	}
	return nil
}
