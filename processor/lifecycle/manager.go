package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/retry"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// Config is what a Manager works with: serve's config, the catalog, and Kafka.
type Config struct {
	// Config is serve's config: the projections' definitions that new versions snapshot.
	Config *topology.Config
	// Store is the catalog.
	Store *store.Store
	// Kafka is a client of the cluster (offsets, group deletion, lag seconds).
	Kafka *kgo.Client
	// Log receives the lifecycle's logs.
	Log *slog.Logger
	// Registry receives the lifecycle's metrics (promotions, swap durations).
	Registry prometheus.Registerer
}

// Manager is the replay lifecycle as a Go API: the control commands (package leader) and the
// CLI are thin layers over it. Every state change goes through the catalog (in one transaction
// each) and reaches the runners of every instance through its notifications. It is safe for
// concurrent use.
type Manager struct {
	cfg     *topology.Config
	store   *store.Store
	kafka   *kgo.Client
	admin   *kadm.Client
	log     *slog.Logger
	retries *retry.Logger
	metrics metrics
	rates   *rateTracker
	tsCache tsCache

	lostWatch lostWatch
}

// New returns the manager of the catalog of c.Store.
func New(c Config) *Manager {
	m := &Manager{
		cfg: c.Config, store: c.Store, kafka: c.Kafka, admin: kadm.NewClient(c.Kafka), log: c.Log,
		retries: retry.NewLogger(c.Log, slog.LevelWarn),
		metrics: newMetrics(c.Registry),
		rates:   newRateTracker(time.Minute),
		tsCache: tsCache{m: map[recordAt]time.Time{}},
	}
	for _, pc := range c.Config.Projections {
		for _, kind := range []string{"promote", "rollback"} {
			m.metrics.promotions.WithLabelValues(pc.Name, kind) // 0 until the first
		}
	}
	return m
}

// catalog is the retry policy of catalog writes that must not be lost: transient errors are
// retried until ctx ends.
func (m *Manager) catalog(what string) retry.Policy {
	return retry.Policy{Retryable: store.IsTransient, Log: m.retries, What: what}
}

type metrics struct {
	promotions   *prometheus.CounterVec
	swapDuration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		promotions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_promotions_total",
			Help: "Switches of a projection's live version (kind: promote or rollback)."}, []string{"projection", "kind"}),
		swapDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kreplay_swap_duration_seconds",
			Help:    "Duration of the view swap transaction of a promote or rollback (the successful attempt).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"projection"}),
	}
	reg.MustRegister(m.promotions, m.swapDuration)
	return m
}

// CreateRequest is `kreplay create`.
type CreateRequest struct {
	Key        string     `json:"key"`
	Projection string     `json:"projection"`
	Topics     []string   `json:"topics,omitempty"`      // a subset of the projection's sources
	Since      *time.Time `json:"since,omitempty"`       // start from the offsets for this time
	EventTypes []string   `json:"event_types,omitempty"` // only these types are applied
	// AutoPromote promotes the version once it is tailing with lag 0 and verify passes.
	AutoPromote bool `json:"auto_promote,omitempty"`
	// AllowTruncatedHistory starts at the log start where retention or compaction removed records.
	AllowTruncatedHistory bool `json:"allow_truncated_history,omitempty"`
	// Start starts the replay at once.
	Start bool `json:"start,omitempty"`
	// DefinitionHash, when set, must be the hash of the projection's definition in this
	// instance's config: an operator's edited config file that the instances do not run yet
	// is refused rather than replayed as the old definition.
	DefinitionHash string `json:"definition_hash,omitempty"`
}

// Create creates a replay: it snapshots the projection's current definition from the config,
// creates the schema KEY and its tables, and (with Start) starts it.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (*store.Version, error) {
	if err := topology.ValidateKey(req.Key); err != nil {
		return nil, control.AsInvalid(err)
	}
	if req.Projection == "" {
		return nil, control.Invalid("create %s: --projection is required", req.Key)
	}
	def, err := m.cfg.Definition(req.Projection)
	if err != nil {
		names := make([]string, 0, len(m.cfg.Projections))
		for _, pc := range m.cfg.Projections {
			names = append(names, pc.Name)
		}
		return nil, control.Invalid("create %s: unknown projection %q (configured: %s)", req.Key, req.Projection, strings.Join(names, ", "))
	}
	if req.DefinitionHash != "" && req.DefinitionHash != def.Hash() {
		return nil, control.Invalid("create %s: serve runs another definition of projection %q (hash %s) than the config you sent the command with (hash %s): "+
			"roll your config out to the kreplay instances and restart them (the live version keeps its own snapshot), then create again",
			req.Key, req.Projection, shortHash(def.Hash()), shortHash(req.DefinitionHash))
	}
	for _, t := range req.Topics {
		if !slices.Contains(def.Topics(), t) {
			return nil, control.Invalid("create %s: topic %q is not a source of projection %q (its sources: %s)", req.Key, t, req.Projection, strings.Join(def.Topics(), ", "))
		}
	}
	for _, t := range req.EventTypes {
		if !def.HandlesType(t) {
			return nil, control.Invalid("create %s: event type %q has no handler in projection %q (handled: %s)", req.Key, t, req.Projection, strings.Join(def.HandledTypes(), ", "))
		}
	}
	if req.Since != nil && req.Since.After(time.Now().Add(time.Minute)) {
		return nil, control.Invalid("create %s: --since %s is in the future", req.Key, req.Since.Format(time.RFC3339))
	}
	opts := store.Options{Topics: req.Topics, Since: req.Since, EventTypes: req.EventTypes,
		AutoPromote: req.AutoPromote, AllowTruncatedHistory: req.AllowTruncatedHistory}
	if old, err := m.store.Version(ctx, req.Key); err == nil {
		if old.State == store.StateRemoved {
			return nil, control.Invalid("create %s: the key belonged to a version of %s that was removed%s; a key is never reused, so that its history (promotions, verifications, commands) stays unambiguous: choose another key, such as %s",
				req.Key, old.Projection, removedOn(old), m.nextKey(ctx, req.Projection))
		}
		return nil, control.Invalid("create %s: the key is already used by a version of %s (state %s); choose another key, such as %s",
			req.Key, old.Projection, old.State, m.nextKey(ctx, req.Projection))
	}
	nv := store.NewVersion{Key: req.Key, Definition: def, Options: opts}
	if req.Start {
		v := &store.Version{Key: req.Key, Definition: def, Options: opts}
		if nv.Start, err = m.startOffsets(ctx, v); err != nil {
			return nil, err
		}
	}
	v, err := m.store.CreateVersion(ctx, nv)
	if errors.Is(err, store.ErrExists) {
		return nil, control.AsInvalid(err)
	}
	if err != nil {
		return nil, err
	}
	m.log.Info("replay created", "projection", v.Projection, "version", v.Key, "state", v.State, "definition_hash", v.DefinitionHash)
	// A version with the live version's shape gets its branch in the live views now, so that
	// promoting it later only updates the catalog (store/route.go). Best effort: without it, the
	// promotion repoints the views (and routes them) as it always could.
	rctx, cancel := context.WithTimeout(ctx, routeBudget)
	defer cancel()
	if err := m.store.Route(rctx, v.Projection); err != nil {
		m.log.Warn("create: could not route the live views over the new version; its promotion will repoint them", "version", v.Key, "err", err)
	}
	return v, nil
}

// routeBudget bounds how long create retries routing the live views (a long reader delays it).
const routeBudget = 30 * time.Second

// Start starts a created replay from offset zero (or its --since offsets). Its state is
// replaying until it reaches the last stable offsets measured now, then tailing.
func (m *Manager) Start(ctx context.Context, key string) (*store.Version, error) {
	v, err := m.version(ctx, key)
	if err != nil {
		return nil, err
	}
	if v.State != store.StateCreated {
		return nil, &store.TransitionError{Key: key, Action: "start", State: v.State, Allowed: []store.State{store.StateCreated}}
	}
	starts, err := m.startOffsets(ctx, v)
	if err != nil {
		return nil, err
	}
	v, err = m.store.StartVersion(ctx, key, starts)
	if err == nil {
		m.log.Info("replay started", "projection", v.Projection, "version", key)
	}
	return v, err
}

// Pause stops a running version on every instance; Resume returns it to where it was.
func (m *Manager) Pause(ctx context.Context, key string) (*store.Version, error) {
	if _, err := m.version(ctx, key); err != nil {
		return nil, err
	}
	return m.store.PauseVersion(ctx, key)
}

// Resume returns a paused version to the state it had; a failed one retries the event it
// failed on (after the operator fixed what made it fail, e.g. a constraint in the tables).
func (m *Manager) Resume(ctx context.Context, key string) (*store.Version, error) {
	if _, err := m.version(ctx, key); err != nil {
		return nil, err
	}
	return m.store.ResumeVersion(ctx, key)
}

// removedOn says when a removed version was removed (" on <date>"), "" when unknown.
func removedOn(v *store.Version) string {
	if v.RemovedAt == nil {
		return ""
	}
	return " on " + v.RemovedAt.UTC().Format(time.RFC3339)
}

// nextKey is the first key <projection>_vN, after the highest N in use, that no version has.
func (m *Manager) nextKey(ctx context.Context, projection string) string {
	versions, err := m.store.Versions(ctx)
	n := 1
	if err == nil {
		for _, v := range versions {
			var k int
			if _, err := fmt.Sscanf(strings.TrimPrefix(v.Key, projection+"_v"), "%d", &k); err == nil && strings.HasPrefix(v.Key, projection+"_v") {
				n = max(n, k+1)
			}
		}
	}
	return fmt.Sprintf("%s_v%d", projection, n)
}

// shortHash is a definition hash ("sha256:<hex>") shortened for messages, as git shortens
// commits.
func shortHash(h string) string { return h[:min(len("sha256:")+12, len(h))] }

// version looks a version up, turning not found into an invalid request.
func (m *Manager) version(ctx context.Context, key string) (*store.Version, error) {
	if err := topology.ValidateKey(key); err != nil {
		return nil, control.AsInvalid(err)
	}
	v, err := m.store.Version(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, control.Invalid("unknown replay %q", key)
	}
	return v, err
}

// startOffsets measures where a version starts in every partition of its topics and the ends it
// must reach: the last stable offsets, as lag is measured (see EndOffsets). From offset zero, unless --since; history that retention deleted or
// compaction thinned is refused unless the version allows truncated history.
func (m *Manager) startOffsets(ctx context.Context, v *store.Version) ([]store.PartitionStart, error) {
	topics := v.Topics()
	admin := m.admin
	ends, err := admin.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	var missing []string
	ends.Each(func(o kadm.ListedOffset) {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, o.Topic)
		}
	})
	for _, t := range topics {
		if _, ok := ends[t]; !ok && !slices.Contains(missing, t) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, control.Invalid("%s: topic %s does not exist in Kafka", v.Key, strings.Join(slices.Compact(missing), ", "))
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	logStarts, err := admin.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	var since kadm.ListedOffsets
	if v.Options.Since != nil {
		if since, err = admin.ListOffsetsAfterMilli(ctx, v.Options.Since.UnixMilli(), topics...); err != nil {
			return nil, fmt.Errorf("list offsets for --since: %w", err)
		}
	}
	var truncated []string
	var out []store.PartitionStart
	ends.Each(func(o kadm.ListedOffset) {
		ps := store.PartitionStart{Topic: o.Topic, Partition: o.Partition, Target: o.Offset}
		logStart := int64(0)
		if ls, ok := logStarts.Lookup(o.Topic, o.Partition); ok && ls.Err == nil {
			logStart = ls.Offset
		}
		switch {
		case v.Options.Since != nil:
			ps.Start = o.Offset
			if so, ok := since.Lookup(o.Topic, o.Partition); ok && so.Err == nil && so.Offset >= 0 {
				ps.Start = min(so.Offset, o.Offset)
			}
			if ps.Start < logStart {
				if v.Options.AllowTruncatedHistory {
					ps.Start = logStart
				} else {
					truncated = append(truncated, fmt.Sprintf("%s[%d] starts at offset %d", o.Topic, o.Partition, logStart))
				}
			}
		case logStart > 0:
			if v.Options.AllowTruncatedHistory {
				ps.Start = logStart
			} else {
				truncated = append(truncated, fmt.Sprintf("%s[%d] starts at offset %d", o.Topic, o.Partition, logStart))
			}
		}
		ps.Target = max(ps.Target, ps.Start)
		out = append(out, ps)
	})
	if len(truncated) == 0 && v.Options.Since == nil && !v.Options.AllowTruncatedHistory {
		compacted, err := m.compactedTopics(ctx, topics)
		if err != nil {
			return nil, err
		}
		for _, t := range compacted {
			truncated = append(truncated, fmt.Sprintf("%s is compacted (cleanup.policy=compact)", t))
		}
	}
	if len(truncated) > 0 {
		sort.Strings(truncated)
		return nil, control.Invalid("%s: cannot replay from offset zero: records were deleted or compacted away (%s); pass --since to start at a later time, or --allow-truncated-history to start at the log start",
			v.Key, strings.Join(truncated, "; "))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out, nil
}

// compactedTopics are the topics whose cleanup.policy compacts.
func (m *Manager) compactedTopics(ctx context.Context, topics []string) ([]string, error) {
	rcs, err := m.admin.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	var out []string
	for _, rc := range rcs {
		if rc.Err != nil {
			continue
		}
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
				out = append(out, rc.Name)
			}
		}
	}
	return out, nil
}

// Bootstrap gives a projection without a version its first one, <projection>_v1, live at once
// and replayed from offset zero; for a projection with a live version it reports drift between
// the config and the live snapshot instead of changing anything.
func (m *Manager) Bootstrap(ctx context.Context, name string) error {
	def, err := m.cfg.Definition(name)
	if err != nil {
		return err
	}
	proj, err := m.store.Projection(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if proj != nil && proj.Live != "" {
		live, err := m.store.Version(ctx, proj.Live)
		if err != nil {
			return err
		}
		if live.DefinitionHash != def.Hash() {
			m.log.Warn("definition drift: the config's definition of the projection differs from its live version's snapshot; the live version keeps running its snapshot. Roll the change out with a replay: kreplay create <key> --projection "+name+" --start",
				"projection", name, "live", live.Key, "live_hash", live.DefinitionHash, "config_hash", def.Hash())
		}
		return nil
	}
	key := name + "_v1"
	if v, err := m.store.Version(ctx, key); err == nil {
		m.log.Warn("projection has no live version; promote one of its versions", "projection", name, "existing", v.Key, "state", v.State)
		return nil
	}
	pc, _ := m.cfg.Projection(name)
	opts := store.Options{AllowTruncatedHistory: pc.AllowTruncatedHistory}
	starts, err := m.startOffsets(ctx, &store.Version{Key: key, Definition: def, Options: opts})
	if err != nil {
		return fmt.Errorf("projection %q: cannot create its first version %s: %w (set allow_truncated_history: true on the projection to start at the log start)", name, key, err)
	}
	v, err := m.store.CreateVersion(ctx, store.NewVersion{Key: key, Definition: def, Options: opts, Start: starts, Live: true})
	if errors.Is(err, store.ErrExists) {
		return nil // another instance bootstrapped it first
	}
	if err != nil {
		return err
	}
	m.log.Info("projection bootstrapped: its first version is live and replays from offset zero", "projection", name, "version", v.Key)
	return nil
}
