package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/internal/startstop"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// runner is this instance's member of one running version's consumer group. Kafka decides which
// partitions it gets (all of them for ordering: global, see soleOwnerBalancer); each assignment
// runs as a session. It stops when the version stops running or the processor shuts down.
type runner struct {
	p     *Processor
	key   string
	group string
	log   *slog.Logger
	m     *versionMetrics

	mu       sync.Mutex
	v        *store.Version
	sess     *session
	cl       *kgo.Client
	wakePoll context.CancelFunc // ends the poll in progress (see consume)
	clReady  chan struct{}      // closed once cl is set: kgo may assign partitions before kgo.NewClient returns

	g   *startstop.Group // the runner's goroutine (see run)
	ctx context.Context  // g's

	stallMu       sync.Mutex
	stallReported time.Time // when the catalog was last told why the version does not advance

	lateUnsaved atomic.Int64 // late events merged and not yet added to the catalog's count
}

// stallReportEvery is how often a version that keeps failing for a reason of the environment
// tells the catalog (and so status) why; status shows the reason while it is fresher than
// three times that.
const stallReportEvery = 30 * time.Second

// stalled reports a batch that failed for a reason of the environment and will be retried: a
// metric at once, the log at once and then once a minute per cause, and the catalog (for
// status) every stallReportEvery. Reporting never holds the batch up for long.
func (r *runner) stalled(ctx context.Context, err error) {
	r.m.retries(store.Cause(err)).Inc()
	r.p.retries.Failed("apply a batch of "+r.key, err, "projection", r.version().Projection, "version", r.key)
	r.stallMu.Lock()
	due := time.Since(r.stallReported) >= stallReportEvery
	if due {
		r.stallReported = time.Now()
	}
	r.stallMu.Unlock()
	if due {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_ = r.p.store.SetStalled(sctx, r.key, "retrying: "+err.Error()) // PostgreSQL may be the problem
	}
}

// saveLate adds the late events merged since the last call to the version's count in the
// catalog (status shows it), after a batch committed. A count it could not save is kept for the
// next call.
func (r *runner) saveLate(ctx context.Context) {
	n := r.lateUnsaved.Swap(0)
	if n == 0 {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.p.store.AddLateEvents(sctx, r.key, n); err != nil {
		r.lateUnsaved.Add(n)
		r.log.Warn("could not add late events to the version's count; will retry after the next batch", "late", n, "err", err)
	}
}

// recovered notes that a batch committed after failures.
func (r *runner) recovered(ctx context.Context, failures int) {
	r.p.retries.Recovered("apply a batch of "+r.key, failures, "projection", r.version().Projection, "version", r.key)
	r.stallMu.Lock()
	reported := !r.stallReported.IsZero()
	r.stallReported = time.Time{}
	r.stallMu.Unlock()
	if reported {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := r.p.store.SetStalled(sctx, r.key, ""); err != nil {
			r.log.Warn("could not clear the version's stalled reason; status shows it until it is older than a minute and a half", "err", err)
		}
	}
}

// startRunner starts this instance's member of a running version's group, under the
// processor's work group.
func (p *Processor) startRunner(v *store.Version) *runner {
	r := &runner{
		p: p, key: v.Key, group: p.cfg.GroupName(v.Projection, v.Key), v: v,
		log: p.log.With("projection", v.Projection, "version", v.Key),
		m:   p.metrics.version(v.Projection, v.Key, v.Definition.OnError),
		g:   startstop.New(p.work.Context()),
	}
	r.ctx = r.g.Context()
	r.g.Go(func(context.Context) { r.run() })
	return r
}

func (r *runner) version() *store.Version {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v
}

// update gives the runner the catalog's latest view of its version (a hold set or cleared by
// verify, a state change).
// The hold reaches the session under r.mu, as in adjust: otherwise an adjust could overwrite
// a newer hold with the one it read before.
func (r *runner) update(v *store.Version) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.v
	r.v = v
	if r.sess != nil && !holdEqual(old.Hold, v.Hold) {
		r.sess.setHold(v.Hold)
	}
}

// observeState notes the state a committed batch reported (replaying -> tailing).
func (r *runner) observeState(s store.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s != "" && r.v.State != s {
		v := *r.v
		v.State = s
		r.v = &v
	}
}

// stop shuts the runner down: the batch in flight finishes, offsets are committed, the member
// leaves the group.
func (r *runner) stop() { r.g.Stop() }

// run runs memberships of the group (consume) one after the other until the runner stops,
// backing off after a membership that ended with an error.
func (r *runner) run() {
	if !r.waitForCode() {
		return
	}
	backoff := retry.NewBackoff(time.Second, 30*time.Second)
	for r.ctx.Err() == nil {
		began := time.Now()
		restart, err := r.consume()
		if time.Since(began) > time.Minute {
			backoff.Reset() // a membership that worked for a while starts the backoff over
		}
		if r.ctx.Err() != nil {
			return
		}
		if err != nil {
			r.p.retries.Failed("consume "+r.key, err, "projection", r.version().Projection, "version", r.key)
		} else if restart {
			r.log.Info("rejoining the consumer group")
		}
		if !retry.Sleep(r.ctx, backoff.Next()) {
			return
		}
	}
}

// consume runs one client (one membership of the group) until the runner stops or the session
// was fenced, in which case the member rejoins.
func (r *runner) consume() (restart bool, err error) {
	v := r.version()
	cfg := r.p.cfg.Kafka
	opts := append(r.p.kafkaOpts("kreplay-"+r.key),
		kgo.ConsumerGroup(r.group),
		kgo.ConsumeTopics(v.Topics()...),
		kgo.Balancers(balancerFor(v.Definition.Ordering)),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, cfg.SessionTimeout/3)),
		// Bounded fetches: a fetch is held decompressed until it is queued (see highWaterFor).
		kgo.FetchMaxBytes(4<<20),
		kgo.FetchMaxPartitionBytes(1<<20),
		// A fetch asks only for the partitions that are not paused (see session.syncFetch); when
		// none of those has new records, the broker holds it for FetchMaxWait, and a partition
		// resumed meanwhile waits for it: at 500ms, a replay's merge stalled up to 0.4s at a time,
		// most at its end, where the exhausted partitions are the ones fetched. An idle client
		// sends ten fetches a second.
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.AdjustFetchOffsetsFn(r.adjust),
		kgo.OnPartitionsRevoked(func(context.Context, *kgo.Client, map[string][]int32) { r.endSession(true) }),
		kgo.OnPartitionsLost(func(context.Context, *kgo.Client, map[string][]int32) { r.endSession(false) }),
	)
	if cfg.InstanceID != "" {
		// Static membership (KIP-345): a restarted instance takes its partitions back at once.
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	ready := make(chan struct{})
	r.mu.Lock()
	r.cl, r.clReady = nil, ready
	r.mu.Unlock()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		close(ready)
		return false, fmt.Errorf("kafka client: %w", err)
	}
	r.mu.Lock()
	r.cl = cl
	r.mu.Unlock()
	close(ready)
	defer func() {
		// The session ends first, while the client can still commit its offsets (a static member
		// is not revoked when its client closes).
		r.endSession(true)
		cl.Close() // leaves the group (a dynamic member)
		if cfg.InstanceID != "" && r.ctx.Err() != nil && !r.p.abrupt.Load() {
			r.leaveStatic(cfg.InstanceID)
		}
	}()

	var watch orphanWatch
	joining := time.Now() // until the member is in a generation (see joinWait)
	fetchErrors := retry.NewBackoff(100*time.Millisecond, 2*time.Second)
	for {
		// A session that stops itself wakes the poll (a quiet topic would block it for good), so
		// that the member acts on the reason at once. wakePoll is set before the check, and
		// stopItself records its cause before it wakes: no stop goes unnoticed. A poll lasts
		// orphanCheckEvery at most, so that the member watches for partitions nobody consumes.
		sess := r.session()
		pollCtx, wake := context.WithTimeout(r.ctx, orphanCheckEvery)
		r.mu.Lock()
		r.wakePoll = wake
		r.mu.Unlock()
		if over, restart, err := sessionOver(sess); over {
			wake()
			return restart, err
		}
		fetches := cl.PollRecords(pollCtx, 8192)
		woken := pollCtx.Err() != nil
		wake()
		if fetches.IsClientClosed() || r.ctx.Err() != nil {
			cl.AllowRebalance()
			return false, nil
		}
		sess = r.session()
		r.joinWait(cl, &joining)
		if r.orphaned(cl, &watch) {
			cl.AllowRebalance()
			return true, nil
		}
		failed := false
		fetches.EachError(func(topic string, partition int32, err error) {
			if woken && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				return // our own wake-up or timeout, not Kafka's
			}
			failed = true
			r.fetchError(sess, topic, partition, err)
		})
		if sess != nil {
			fetches.EachPartition(sess.push)
		}
		cl.AllowRebalance()
		if failed && fetches.NumRecords() == 0 {
			// A poll that returns only errors (a topic gone, a broker replaced) returns at once:
			// do not spin on it.
			retry.Sleep(r.ctx, fetchErrors.Next())
		} else {
			fetchErrors.Reset()
		}
	}
}

// leaveStatic makes a static member that stops for good (shutdown, or its version stopped) leave
// its group, so that its partitions move at once rather than after its session timeout. A member
// that crashed does not leave: restarted with the same instance id, it takes them back at once.
func (r *runner) leaveStatic(instanceID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 5*time.Second)
	defer cancel()
	resp, err := r.p.admin.LeaveGroup(ctx, kadm.LeaveGroup(r.group).InstanceIDs(instanceID).Reason("kreplay instance stopping"))
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		r.log.Warn("could not leave the consumer group as a static member; its partitions move after kafka.session_timeout", "group", r.group, "err", err)
	}
}

// joinWaitLog is how long a member may wait to join its group before it says why.
const joinWaitLog = 5 * time.Second

// joinWait says, once per membership, why a member has not joined its group after joinWaitLog:
// the group rebalances only once every member it knows rejoined or timed out, so the member of
// an instance that was killed holds the version's partitions until its session times out.
func (r *runner) joinWait(cl *kgo.Client, since *time.Time) {
	if since.IsZero() {
		return
	}
	if _, gen := cl.GroupMetadata(); gen > 0 {
		*since = time.Time{}
		return
	}
	waited := time.Since(*since)
	if waited < joinWaitLog {
		return
	}
	*since = time.Time{}
	k := r.p.cfg.Kafka
	hint := "set kafka.instance_id (static membership, e.g. the pod name) so that a restarted instance takes its partitions back at once"
	if k.InstanceID != "" {
		hint = "this instance is a static member (kafka.instance_id " + k.InstanceID + "): it takes back its own partitions at once; another member's wait for its session timeout"
	}
	r.log.Warn("still joining the consumer group: the group waits for its members to rejoin, and for one that is gone (an instance killed) until its session times out; the version applies nothing meanwhile",
		"group", r.group, "waited", waited.Round(time.Second), "kafka.session_timeout", k.SessionTimeout, "hint", hint)
}

// orphanCheckEvery is how often a member checks that the version's partitions are consumed by
// someone (see orphaned).
const orphanCheckEvery = 2 * time.Second

// orphanWatch is what a member remembers of its group generation for orphaned.
type orphanWatch struct {
	gen        int32
	since      time.Time
	checked    time.Time
	goneWarned bool
}

// orphaned reports whether this member should leave and rejoin the group because some of the
// version's partitions have not been claimed in the current generation for longer than a
// rebalance and two session timeouts: the member they were assigned to is gone without the group
// noticing (seen with kfake when a member dies between JoinGroup and its response: it never
// expires). Rejoining starts a rebalance, which drops members that do not rejoin. Both balancers
// are eager: every partition is claimed again in every generation, so a partition whose
// checkpoint generation is older than the group's has no consumer.
func (r *runner) orphaned(cl *kgo.Client, w *orphanWatch) bool {
	_, gen := cl.GroupMetadata()
	if gen <= 0 {
		w.gen = -1
		return false
	}
	if gen != w.gen {
		w.gen, w.since = gen, time.Now()
		return false
	}
	k := r.p.cfg.Kafka
	if time.Since(w.since) < k.RebalanceTimeout+2*k.SessionTimeout || time.Since(w.checked) < orphanCheckEvery {
		return false
	}
	w.checked = time.Now()
	cps, err := r.p.store.Checkpoints(r.ctx, r.key)
	if err != nil {
		return false
	}
	var stale []store.TopicPartition
	for _, c := range cps {
		if c.Generation < gen {
			stale = append(stale, store.TopicPartition{Topic: c.Topic, Partition: c.Partition})
		}
	}
	if len(stale) == 0 {
		return false
	}
	// A partition whose topic was deleted from Kafka is assigned to nobody: no member to wait for.
	exist, err := r.p.existingPartitions(r.ctx, stale)
	if err != nil {
		return false
	}
	var unclaimed, gone []string
	for _, tp := range stale {
		if exist[tp] {
			unclaimed = append(unclaimed, tp.String())
		} else {
			gone = append(gone, tp.String())
		}
	}
	if len(gone) > 0 && !w.goneWarned {
		w.goneWarned = true
		r.log.Warn("partitions of this version no longer exist in Kafka (was a source topic deleted?): nothing consumes them, the version goes on with the others",
			"gone", gone)
	}
	if len(unclaimed) == 0 {
		return false
	}
	r.log.Warn("partitions assigned in this generation were never claimed: their member is gone; rejoining so that the group rebalances them",
		"generation", gen, "unclaimed", unclaimed, "after", time.Since(w.since).Round(time.Second))
	w.since = time.Now()
	return true
}

// sessionOver says whether the member must leave the group because its session stopped itself:
// fenced (rejoin at once), or an error that the lane could not retry — neither a connection
// problem nor the version's own failure — after which it rejoins after a backoff and resumes at
// the checkpoints rather than hold partitions and apply nothing. A version that failed keeps its
// member until the manager stops it.
func sessionOver(sess *session) (over, restart bool, err error) {
	if sess == nil {
		return false, false, nil
	}
	reason := sess.stoppedItself()
	switch {
	case reason == nil:
		return false, false, nil
	case errors.Is(reason, errSessionOver):
		return true, true, nil
	case errors.Is(reason, errVersionFailed):
		return false, false, nil
	}
	return true, true, reason
}

// wake ends the runner's poll in progress.
func (r *runner) wake() {
	r.mu.Lock()
	wake := r.wakePoll
	r.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// assigned is the number of partitions this instance consumes for the version now.
func (r *runner) assigned() int {
	if s := r.session(); s != nil {
		return len(s.list)
	}
	return 0
}

func (r *runner) session() *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sess
}

// adjust runs when partitions are assigned, before fetching starts: it claims them in
// PostgreSQL for this generation and starts consuming at the checkpoints (the truth), whatever
// offsets the group had committed.
func (r *runner) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	// The group may assign partitions while kgo.NewClient is still returning (seen under load).
	r.mu.Lock()
	ready := r.clReady
	r.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r.mu.Lock()
	cl := r.cl
	r.mu.Unlock()
	if cl == nil {
		return nil, errors.New("kafka client not created")
	}
	member, gen := cl.GroupMetadata()
	v := r.version()
	var tps []store.TopicPartition
	var topics []string
	for t, ps := range offsets {
		topics = append(topics, t)
		for p := range ps {
			tps = append(tps, store.TopicPartition{Topic: t, Partition: p})
		}
	}
	claimed, err := r.p.store.Claim(ctx, r.key, gen, member, tps, false)
	if errors.Is(err, store.ErrFenced) {
		// The stored owner has a newer generation than ours. That is only legitimate if the
		// group was deleted meanwhile and its generations restarted: check with the broker.
		if r.p.ownersGone(ctx, r.key, r.group, member, tps) {
			r.log.Warn("group generations restarted (the group was deleted or expired); taking over the checkpoints", "generation", gen)
			claimed, err = r.p.store.Claim(ctx, r.key, gen, member, tps, true)
		}
	}
	if err != nil {
		r.p.health.postgres(!store.IsTransient(err), err)
		return nil, fmt.Errorf("claim partitions of %s: %w", r.key, err)
	}
	// Only the assigned topics: a source topic deleted from Kafka is not assigned, and must not
	// keep the member from consuming the others.
	ends, starts, err := lifecycle.Bounds(ctx, r.p.admin, topics)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", r.key, err)
	}
	init := map[store.TopicPartition]partitionStart{}
	out := map[string]map[int32]kgo.Offset{}
	for _, tp := range tps {
		c := claimed[tp]
		next := c.Next
		if logStart, ok := starts[tp]; ok && next < logStart {
			if !v.Options.AllowTruncatedHistory {
				reason := fmt.Sprintf("records %d..%d were deleted (retention) before this version applied them; it cannot be rebuilt exactly: create a new replay (--since, or --allow-truncated-history)", next, logStart-1)
				ferr := r.fail(ctx, store.VersionError{Reason: reason, Topic: tp.Topic, Partition: tp.Partition, Offset: next})
				return nil, errors.Join(errors.New(reason), ferr)
			}
			r.log.Warn("skipping records deleted by retention (allow_truncated_history)", "topic", tp.Topic, "partition", tp.Partition, "from", next, "to", logStart)
			next = logStart
		}
		end, ok := ends[tp]
		if !ok {
			end = -1
		}
		committed := int64(-1)
		if o, ok := offsets[tp.Topic][tp.Partition]; ok {
			committed = o.EpochOffset().Offset
		}
		init[tp] = partitionStart{next: next, target: c.Target, end: end, committed: committed}
		if out[tp.Topic] == nil {
			out[tp.Topic] = map[int32]kgo.Offset{}
		}
		out[tp.Topic][tp.Partition] = kgo.NewOffset().At(next).WithEpoch(-1)
	}
	sess, err := newSession(r, gen, member, init)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	old := r.sess
	r.sess = sess
	// A hold set or cleared (verify) while the session was being built went to r.v only, as
	// update saw no session yet.
	sess.setHold(r.v.Hold)
	r.mu.Unlock()
	if old != nil {
		old.stop(true, r.p.shutdownTimeout)
	}
	// Pauses persist in the client across rebalances: a partition that an earlier session paused
	// (its queue was full) would never be fetched again by this one.
	if paused := cl.PauseFetchPartitions(nil); len(paused) > 0 {
		cl.ResumeFetchPartitions(paused)
	}
	sess.start(r.ctx)
	r.log.Info("partitions assigned", "generation", gen, "partitions", len(tps))
	return out, nil
}

// endSession ends the current session: gracefully on revoke (finish, commit), abruptly when
// the partitions were lost (another member may own them already).
func (r *runner) endSession(graceful bool) {
	graceful = graceful && !r.p.abrupt.Load()
	r.mu.Lock()
	sess := r.sess
	r.sess = nil
	r.mu.Unlock()
	if sess != nil {
		sess.stop(graceful, r.p.shutdownTimeout)
	}
}

func (r *runner) fetchError(sess *session, topic string, partition int32, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	var dataLoss *kgo.ErrDataLoss
	if errors.Is(err, kerr.OffsetOutOfRange) || errors.As(err, &dataLoss) {
		reason := fmt.Sprintf("the broker no longer has the records this version needs (%v): they were deleted or the topic was recreated; create a new replay", err)
		verr := store.VersionError{Reason: reason, Topic: topic, Partition: partition, Offset: -1}
		if sess != nil {
			if p := sess.parts[store.TopicPartition{Topic: topic, Partition: partition}]; p != nil {
				verr.Offset = p.pos // the offset it asked for (only this goroutine writes pos)
			}
		}
		// Stopping (the version was failed by another of its partitions, say): nothing to report.
		if ferr := r.fail(r.ctx, verr); ferr != nil && r.ctx.Err() == nil {
			r.log.Error("could not mark the version failed", "err", ferr)
		}
		return
	}
	r.p.health.kafka(false, err)
	r.p.retries.Failed("fetch "+topic+" for "+r.key, err, "partition", partition)
}

// fail marks the version failed and says why in the log (status shows it too, but whoever reads
// serve's log must see why the version stopped). A version failed, paused or removed meanwhile is
// not an error.
func (r *runner) fail(ctx context.Context, verr store.VersionError) error {
	_, err := r.p.store.FailVersion(ctx, r.key, verr)
	switch {
	case errors.Is(err, store.ErrInvalidTransition):
		return nil
	case err == nil:
		r.log.Error("version failed; it applies nothing more until resumed (or replaced by a new replay)", "reason", verr.Error())
	}
	return err
}

func holdEqual(a, b store.Hold) bool {
	if len(a) != len(b) {
		return false
	}
	for t, ps := range a {
		if len(ps) != len(b[t]) {
			return false
		}
		for p, o := range ps {
			if bo, ok := b[t][p]; !ok || bo != o {
				return false
			}
		}
	}
	return true
}

// balancerFor chooses the group balancer: a global order needs one consumer for all the
// partitions; a partition order spreads them (sticky, eager: every rebalance is a new session).
func balancerFor(o topology.Ordering) kgo.GroupBalancer {
	if o == topology.OrderingPartition {
		return kgo.StickyBalancer()
	}
	return soleOwnerBalancer{}
}
