package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// The installation guard: one catalog per control and status topic.
//
// Every catalog (database) has an identity (store.Installation). Which catalog holds the topics
// is decided on the status topic itself (partition 0), by the catalogs' announcements
// (control.Announcement) in offset order:
//
//   - the first claim holds the topics;
//   - a claim of another catalog changes nothing (that catalog refuses to start), unless it is a
//     take-over (serve --take-over), which gives the topics to its catalog;
//   - an announcement counts at the offset of the claim it repeats (Since), so that the
//     compacted topic, which keeps each catalog's latest announcement only, decides the same.
//
// At start, before any version is consumed (the consumer groups are named after the
// installation, so two catalogs would split their partitions), serve reads the announcements:
// when another catalog holds the topics, it refuses to start with a *ClashError; when none does
// (or with --take-over), it claims them and reads on to its own claim, so that of two newcomers
// starting together, the earlier claim wins and the other refuses. While running, every instance
// follows the announcements and stops when another catalog takes the topics over; the leader
// repeats its catalog's announcement every announceEvery.

// announceEvery is how often the leader repeats its catalog's announcement.
const announceEvery = 30 * time.Second

// clearAgainAfter is when a catalog that took the topics over clears the statuses of the one it
// took them from again (see followInstallation).
const clearAgainAfter = 10 * time.Second

// guard is this instance's view of who holds the topics.
type guard struct {
	in      store.Installation
	holders holders
	pos     int64       // the next status-topic offset (partition 0) to read
	held    claim       // the claim by which this catalog holds the topics
	cl      *kgo.Client // under Run: follows the announcements and publishes the leader's
	// statuses are the keys of the version statuses read (not tombstoned), for a take-over to
	// clear those of the catalog it takes the topics from.
	statuses map[string]bool
	// tookOver: this instance took the topics over at start.
	tookOver bool
}

// claim is what an announcement says: catalog holds the topics since the offset of its claim.
type claim struct {
	since    int64
	catalog  string
	takeOver bool
}

// holders decides which catalog holds the topics from the announcements read.
type holders struct {
	claims map[claim]bool
	latest map[string]control.Announcement // each catalog's latest announcement
}

func (h *holders) add(offset int64, a control.Announcement) {
	if h.claims == nil {
		h.claims, h.latest = map[claim]bool{}, map[string]control.Announcement{}
	}
	since := offset
	if a.Since != nil && *a.Since >= 0 && *a.Since <= offset {
		since = *a.Since
	}
	h.claims[claim{since: since, catalog: a.CatalogID, takeOver: a.TakeOver}] = true
	h.latest[a.CatalogID] = a
}

// holder is the claim by which a catalog holds the topics; ok is false when none claimed them.
func (h *holders) holder() (c claim, ok bool) {
	all := make([]claim, 0, len(h.claims))
	for c := range h.claims {
		all = append(all, c)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].since < all[j].since })
	for _, next := range all {
		if !ok || next.takeOver && next.catalog != c.catalog {
			c, ok = next, true
		}
	}
	return c, ok
}

// ClashError is why serve stops or refuses to start: another catalog holds the control and
// status topics.
type ClashError struct {
	ControlTopic, StatusTopic string
	Holder                    control.Announcement // the latest announcement of the catalog that holds them
	Mine                      store.Installation
	// TookOver: the other catalog took the topics over while this instance ran.
	TookOver bool
}

func (e *ClashError) Error() string {
	h := e.Holder
	msg := fmt.Sprintf("the topics %s and %s belong to another kreplay installation: catalog %s (database %s, installation %q), announced at %s by %s",
		e.ControlTopic, e.StatusTopic, h.CatalogID, h.Database, h.Installation, h.AnnouncedAt.UTC().Format(time.RFC3339), h.Instance)
	if e.TookOver {
		msg += "; it took them over (serve --take-over), so this serve stops"
	}
	msg += fmt.Sprintf("; this serve's catalog is %s (database %s). ", e.Mine.CatalogID, e.Mine.Database) +
		"Two installations on one Kafka cluster need names of their own: set installation: in each one's config file (such as installation: shop); it names their topics and consumer groups. "
	if e.TookOver {
		return msg + "To take the topics back (only if that other installation is gone for good), start serve once with --take-over"
	}
	return msg + "If that other installation is gone for good (its database dropped), start serve once with --take-over to take the topics over"
}

// CheckInstallation makes sure that this catalog holds the control and status topics, claiming
// them when no catalog does (or, with Config.TakeOver, when another does); it returns a
// *ClashError when another catalog holds them. serve calls it before it consumes anything.
func (l *Leader) CheckInstallation(ctx context.Context) error {
	in, previous, err := l.store.SetInstallation(ctx, l.cfg.Installation)
	if err != nil {
		return fmt.Errorf("the catalog's identity: %w", err)
	}
	if previous != "" {
		l.log.Warn("installation renamed: its topics and consumer groups have new names; versions resume from their checkpoints, and commands left on the old control topic are not read",
			"installation", in.Name, "was", previous, "control_topic", l.cfg.ControlTopic, "status_topic", l.cfg.StatusTopic)
	}
	g := &guard{in: in, statuses: map[string]bool{}}
	cl, err := kgo.NewClient(l.guardOpts(0)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, l.cfg.StatusTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("status topic %s: %w", l.cfg.StatusTopic, err)
	}
	end, _ := ends.Lookup(l.cfg.StatusTopic, 0)
	if err := g.readTo(ctx, cl, end.Offset); err != nil {
		return err
	}
	holder, held := g.holders.holder()
	if !held || holder.catalog != in.CatalogID {
		if held && !l.cfg.TakeOver {
			return l.clash(g, holder, false)
		}
		if held { // a take-over: done before the claim, so that a retry after it does not miss it
			if err := l.skipCommandsTakenOver(ctx, cl); err != nil {
				return err
			}
		}
		offset, err := l.announce(ctx, cl, g, claim{catalog: in.CatalogID, takeOver: held}, true)
		if err != nil {
			return err
		}
		if err := g.readTo(ctx, cl, offset+1); err != nil {
			return err
		}
		if holder, _ = g.holders.holder(); holder.catalog != in.CatalogID {
			return l.clash(g, holder, false) // another catalog claimed them just before
		}
		if holder.takeOver {
			l.log.Warn("this catalog took the control and status topics over (--take-over): instances of the installation that held them stop", "catalog", in.CatalogID)
			g.tookOver = true
			if err := l.clearStatuses(ctx, cl, g); err != nil {
				l.log.Warn("could not clear the statuses of the installation taken over; kreplay status shows them until they are", "err", err)
			}
		}
	}
	g.held = holder
	l.guard = g
	l.log.Info("this catalog holds the control and status topics", "installation", in.Name, "catalog", in.CatalogID, "database", in.Database)
	return nil
}

// guardOpts are the options of a client that reads the announcements from offset from and
// publishes announcements to partition 0.
func (l *Leader) guardOpts(from int64) []kgo.Opt {
	return append(l.cfg.StatusClientOpts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.cfg.StatusTopic: {0: kgo.NewOffset().At(from)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
	)
}

// readTo reads the status topic's partition 0 up to (not including) offset end, noting the
// announcements.
func (g *guard) readTo(ctx context.Context, cl *kgo.Client, end int64) error {
	for g.pos < end {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return fmt.Errorf("read the status topic: %w", ferr)
		}
		fetches.EachRecord(g.note)
	}
	return nil
}

// note takes a status-topic record into account.
func (g *guard) note(r *kgo.Record) {
	g.pos = r.Offset + 1
	if g.statuses != nil && !strings.Contains(string(r.Key), ":") {
		if r.Value == nil {
			delete(g.statuses, string(r.Key))
		} else {
			g.statuses[string(r.Key)] = true
		}
	}
	if !control.IsAnnouncementKey(r.Key) || r.Value == nil {
		return
	}
	var a control.Announcement
	if json.Unmarshal(r.Value, &a) == nil && a.CatalogID != "" {
		g.holders.add(r.Offset, a)
	}
}

// announce publishes this catalog's announcement of c: a claim (without Since) or a repeat of
// the claim it holds the topics by. It returns the record's offset.
func (l *Leader) announce(ctx context.Context, cl *kgo.Client, g *guard, c claim, isClaim bool) (int64, error) {
	a := control.Announcement{Installation: g.in.Name, CatalogID: g.in.CatalogID, Database: g.in.Database, Instance: l.cfg.Instance,
		AnnouncedAt: time.Now().UTC(), TakeOver: c.takeOver}
	if !isClaim {
		since := c.since
		a.Since = &since
	}
	b, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	rec := &kgo.Record{Topic: l.cfg.StatusTopic, Partition: 0, Key: []byte(control.AnnouncementKey(g.in.CatalogID)), Value: b}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return 0, fmt.Errorf("announce this catalog on %s: %w", l.cfg.StatusTopic, err)
	}
	return rec.Offset, nil
}

// skipCommandsTakenOver has this catalog read the control topic from its current end: the
// commands before were the catalog's it took the topics from (they ran there, or were
// answered), not this one's to run or to answer again.
func (l *Leader) skipCommandsTakenOver(ctx context.Context, cl *kgo.Client) error {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, l.cfg.ControlTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("control topic %s: %w", l.cfg.ControlTopic, err)
	}
	end, _ := ends.Lookup(l.cfg.ControlTopic, 0)
	if err := l.store.SetControlPosition(ctx, l.cfg.ControlTopic, end.Offset); err != nil {
		return err
	}
	l.log.Info("the commands on the control topic before the take-over are left to the catalog taken over", "topic", l.cfg.ControlTopic, "from_offset", end.Offset)
	return nil
}

// clearStatuses tombstones the version statuses on the status topic that are not this
// catalog's: after a take-over, they are the statuses of the installation taken over, which
// kreplay status would show as this one's.
func (l *Leader) clearStatuses(ctx context.Context, cl *kgo.Client, g *guard) error {
	versions, err := l.store.Versions(ctx)
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, v := range versions {
		ours[v.Key] = true
	}
	var recs []*kgo.Record
	for key := range g.statuses {
		if !ours[key] {
			recs = append(recs, &kgo.Record{Topic: l.cfg.StatusTopic, Partition: 0, Key: []byte(key)})
		}
	}
	if len(recs) == 0 {
		return nil
	}
	l.log.Info("statuses of the installation taken over cleared", "versions", len(recs))
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

// clash is the error of a catalog that does not hold the topics.
func (l *Leader) clash(g *guard, holder claim, tookOver bool) error {
	return &ClashError{ControlTopic: l.cfg.ControlTopic, StatusTopic: l.cfg.StatusTopic, Holder: g.holders.latest[holder.catalog], Mine: g.in, TookOver: tookOver}
}

// followInstallation follows the announcements until ctx ends, and returns a *ClashError when
// another catalog takes the topics over. After a take-over, it clears the statuses of the
// catalog taken over once more after clearAgainAfter: an instance of that catalog may have
// published some before it saw the take-over and stopped.
func (l *Leader) followInstallation(ctx context.Context) error {
	g := l.guard
	var clearAgain <-chan time.Time
	if g.tookOver {
		clearAgain = time.After(clearAgainAfter)
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := g.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil //nolint:nilerr // shutting down: the fetch error is ours
		}
		select {
		case <-clearAgain:
			clearAgain = nil
			if err := l.clearStatuses(ctx, g.cl, g); err != nil && ctx.Err() == nil {
				l.log.Warn("could not clear the statuses of the installation taken over; kreplay status shows them until they are", "err", err)
			}
		default:
		}
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) { // the poll's own second
				l.retries.Failed("read the status topic's announcements", err, "topic", t, "partition", part)
			}
		})
		fetches.EachRecord(g.note)
		if holder, _ := g.holders.holder(); holder.catalog != g.in.CatalogID {
			err := l.clash(g, holder, true)
			l.log.Error("another catalog took the control and status topics over: this instance stops", "err", err)
			return err
		}
	}
}

// announceLoop repeats this catalog's announcement, while this instance leads, until ctx ends.
func (l *Leader) announceLoop(ctx context.Context) {
	g := l.guard
	for {
		if _, err := l.announce(ctx, g.cl, g, g.held, false); err != nil && ctx.Err() == nil {
			l.retries.Failed("announce this catalog", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(announceEvery):
		}
	}
}

// errNoGuard: Run without CheckInstallation.
var errNoGuard = errors.New("leader: CheckInstallation must succeed before Run")
