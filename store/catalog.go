package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kreplay/kreplay/topology"
)

// State is where a version is in its lifecycle:
// created -> replaying -> tailing -> live -> retired -> removed, plus paused and failed.
type State string

// The states of a version.
const (
	StateCreated   State = "created"
	StateReplaying State = "replaying"
	StateTailing   State = "tailing"
	StateLive      State = "live"
	StateRetired   State = "retired"
	StateRemoved   State = "removed"
	StatePaused    State = "paused"
	StateFailed    State = "failed"
)

// States lists every state, in lifecycle order (for metrics).
var States = []State{StateCreated, StateReplaying, StateTailing, StateLive, StateRetired, StateRemoved, StatePaused, StateFailed}

// Running reports whether a version in this state consumes events.
func (s State) Running() bool {
	switch s {
	case StateReplaying, StateTailing, StateLive, StateRetired:
		return true
	}
	return false
}

// Options are what a replay was created with.
type Options struct {
	// Topics restricts the version to these of its projection's sources (empty: all).
	Topics []string `json:"topics,omitempty"`
	// Since starts from the offsets for this time instead of offset zero.
	Since *time.Time `json:"since,omitempty"`
	// EventTypes: only these types are applied (empty: all); others still advance the checkpoint.
	EventTypes []string `json:"event_types,omitempty"`
	// AutoPromote promotes the version once it is tailing with lag 0 and verify passes.
	AutoPromote bool `json:"auto_promote,omitempty"`
	// AllowTruncatedHistory starts at the log start offset where retention removed records.
	AllowTruncatedHistory bool `json:"allow_truncated_history,omitempty"`
}

// VersionError is why a version failed and, for an event, where it is.
type VersionError struct {
	Reason    string `json:"reason"`
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

func (e *VersionError) Error() string {
	switch {
	case e.Topic == "":
		return e.Reason
	case e.Offset < 0: // not known
		return fmt.Sprintf("%s (topic %s partition %d)", e.Reason, e.Topic, e.Partition)
	}
	return fmt.Sprintf("%s (topic %s partition %d offset %d)", e.Reason, e.Topic, e.Partition, e.Offset)
}

// Hold is an offset vector that runners must not apply at or beyond: topic -> partition -> offset.
type Hold map[string]map[int32]int64

// Version is a version of a projection as the catalog records it.
type Version struct {
	Key            string
	Projection     string
	Role           string // the PostgreSQL role its SQL runs as; "" for a version created before roles, until serve gives it one
	State          State
	ResumeState    State // the state resume returns to, while paused or failed
	Definition     topology.Definition
	DefinitionHash string
	Options        Options
	Error          *VersionError
	// Stalled is why a running version does not advance (its last batch failed for a reason of
	// the environment and is being retried), "" when it does; StalledAt is when it was said.
	Stalled   string
	StalledAt *time.Time
	// LateEvents counts the events applied behind a greater one while tailing (see
	// topology.Projection.MaxLateness).
	LateEvents int64
	Hold       Hold
	CreatedAt  time.Time
	StartedAt  *time.Time
	CaughtUpAt *time.Time
	PromotedAt *time.Time
	RetiredAt  *time.Time
	RemovedAt  *time.Time
	UpdatedAt  time.Time
}

// Topics are the topics the version consumes: its options' subset or the definition's sources.
func (v *Version) Topics() []string {
	if len(v.Options.Topics) > 0 {
		return v.Options.Topics
	}
	return v.Definition.Topics()
}

// ProjectionRow is a projection as the catalog records it.
type ProjectionRow struct {
	Name     string
	Live     string // key of the live version, "" if none
	Previous string // key of the version that was live before, "" if none
}

const versionColumns = `key, projection, state, coalesce(resume_state, ''), definition, definition_hash, options,
	error, coalesce(error_topic, ''), coalesce(error_partition, 0), coalesce(error_offset, 0), hold,
	created_at, started_at, caught_up_at, promoted_at, retired_at, removed_at, updated_at, coalesce(role, ''),
	coalesce(stalled, ''), stalled_at, late_events`

func scanVersion(row pgx.Row) (*Version, error) {
	var (
		v         Version
		def, opts []byte
		hold      []byte
		errReason *string
		errTopic  string
		errPart   int32
		errOffset int64
	)
	if err := row.Scan(&v.Key, &v.Projection, &v.State, &v.ResumeState, &def, &v.DefinitionHash, &opts,
		&errReason, &errTopic, &errPart, &errOffset, &hold,
		&v.CreatedAt, &v.StartedAt, &v.CaughtUpAt, &v.PromotedAt, &v.RetiredAt, &v.RemovedAt, &v.UpdatedAt, &v.Role,
		&v.Stalled, &v.StalledAt, &v.LateEvents); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(def, &v.Definition); err != nil {
		return nil, fmt.Errorf("version %s: definition snapshot: %w", v.Key, err)
	}
	if err := json.Unmarshal(opts, &v.Options); err != nil {
		return nil, fmt.Errorf("version %s: options: %w", v.Key, err)
	}
	if len(hold) > 0 {
		if err := json.Unmarshal(hold, &v.Hold); err != nil {
			return nil, fmt.Errorf("version %s: hold: %w", v.Key, err)
		}
	}
	if errReason != nil {
		v.Error = &VersionError{Reason: *errReason, Topic: errTopic, Partition: errPart, Offset: errOffset}
	}
	return &v, nil
}

// Version returns one version by key.
func (s *Store) Version(ctx context.Context, key string) (*Version, error) {
	return getVersion(ctx, s.pool, key, false)
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func getVersion(ctx context.Context, q queryRower, key string, forUpdate bool) (*Version, error) {
	sql := "SELECT " + versionColumns + " FROM kreplay.versions WHERE key = $1"
	if forUpdate {
		sql += " FOR UPDATE"
	}
	v, err := scanVersion(q.QueryRow(ctx, sql, key))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no version %q", key)
	}
	return v, err
}

// Versions returns every version (removed ones included), by projection and creation time.
func (s *Store) Versions(ctx context.Context) ([]*Version, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+versionColumns+" FROM kreplay.versions ORDER BY projection, created_at, key")
	if err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	defer rows.Close()
	var out []*Version
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Projections returns every projection the catalog knows, by name.
func (s *Store) Projections(ctx context.Context) ([]ProjectionRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, coalesce(live_version, ''), coalesce(previous_version, '')
		FROM kreplay.projections ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list projections: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ProjectionRow, error) {
		var p ProjectionRow
		err := r.Scan(&p.Name, &p.Live, &p.Previous)
		return p, err
	})
}

// Projection returns one projection.
func (s *Store) Projection(ctx context.Context, name string) (*ProjectionRow, error) {
	return getProjection(ctx, s.pool, name, false)
}

func getProjection(ctx context.Context, q queryRower, name string, forUpdate bool) (*ProjectionRow, error) {
	sql := `SELECT name, coalesce(live_version, ''), coalesce(previous_version, '') FROM kreplay.projections WHERE name = $1`
	if forUpdate {
		sql += " FOR UPDATE"
	}
	var p ProjectionRow
	err := q.QueryRow(ctx, sql, name).Scan(&p.Name, &p.Live, &p.Previous)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no projection %q", name)
	}
	return &p, err
}

// PartitionStart is where a version starts in one partition and the high watermark it must reach
// to have caught up.
type PartitionStart struct {
	Topic     string
	Partition int32
	Start     int64
	Target    int64
}

// NewVersion is what CreateVersion needs.
type NewVersion struct {
	Key        string
	Definition topology.Definition
	Options    Options
	// Start, when non-nil, also starts the version at these offsets (create --start, bootstrap).
	Start []PartitionStart
	// Live makes the version live at once, creating the views (the automatic <projection>_v1).
	Live bool
}

// CreateVersion creates a version: its role (see role.go) owning a new schema, its tables
// (created by that role, so that its statements can write only there), then, in one transaction,
// its catalog row and, as asked, its checkpoints (started) and the live views (bootstrap). What
// an interrupted create left behind is removed by the next create of the key (or at serve start,
// see EnsureRoles); a transaction PostgreSQL refuses because of a concurrent one is run again, a
// few times.
func (s *Store) CreateVersion(ctx context.Context, nv NewVersion) (*Version, error) {
	if err := topology.ValidateKey(nv.Key); err != nil {
		return nil, err
	}
	if nv.Key == s.cfg.LiveSchema {
		return nil, fmt.Errorf("replay key %q is the live schema's name; choose another key", nv.Key)
	}
	def, err := json.Marshal(nv.Definition)
	if err != nil {
		return nil, err
	}
	opts, err := json.Marshal(nv.Options)
	if err != nil {
		return nil, err
	}
	id, err := s.catalogID(ctx)
	if err != nil {
		return nil, err
	}
	role := versionRole(id, nv.Key)
	var created *Version
	err = s.withKeyLock(ctx, nv.Key, func() error {
		if err := s.checkNewVersion(ctx, nv); err != nil {
			return err
		}
		if err := s.leftover(ctx, nv.Key); err != nil {
			return err
		}
		password, err := s.createRole(ctx, role, nv.Key, nv.Definition.Reads)
		if err != nil {
			return err
		}
		done := false
		defer func() {
			if done {
				return
			}
			// A commit whose acknowledgement was lost may have created the version after all:
			// then its role stays.
			var exists bool
			err := s.pool.QueryRow(context.WithoutCancel(ctx), "SELECT EXISTS (SELECT 1 FROM kreplay.versions WHERE key = $1)", nv.Key).Scan(&exists)
			if err == nil && !exists {
				err = s.dropRoleNow(ctx, role)
			}
			if err != nil {
				s.logger.Warn("could not drop the role of a version whose create failed; the next create of its key or serve's start drops it", "version", nv.Key, "err", err)
			}
		}()
		if err := s.runTables(ctx, s.loginConfig(role, password, nv.Key, "kreplay:create:"+nv.Key), nv.Key, nv.Definition); err != nil {
			return err
		}
		// A transaction refused for a concurrent one (two instances granting the reader role
		// usage on the live schema at once, say) rolled back entirely: run it again.
		err = s.conflictRetry(ctx, func() error {
			created, err = s.createVersionOnce(ctx, nv, def, opts, role, password)
			return err
		})
		done = err == nil
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", nv.Key, err)
	}
	return created, nil
}

// createAttempts bounds CreateVersion's attempts on conflicts with concurrent transactions.
const createAttempts = 10

// checkNewVersion refuses a key some version has and a second live version of a projection.
func (s *Store) checkNewVersion(ctx context.Context, nv NewVersion) error {
	var owner string
	var state State
	err := s.pool.QueryRow(ctx, `SELECT projection, state FROM kreplay.versions WHERE key = $1`, nv.Key).Scan(&owner, &state)
	if err == nil {
		return refuse(ErrExists, "replay key %q is already used by projection %q (state %s); choose another key", nv.Key, owner, state)
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if nv.Live {
		var live string
		err := s.pool.QueryRow(ctx, `SELECT coalesce(live_version, '') FROM kreplay.projections WHERE name = $1`, nv.Definition.Projection).Scan(&live)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if live != "" {
			return refuse(ErrExists, "projection %q already has a live version (%s)", nv.Definition.Projection, live)
		}
	}
	return nil
}

// runTables runs a definition's tables statements in schema, on a connection of cfg (the
// version's role), and commits them.
func (s *Store) runTables(ctx context.Context, cfg *pgx.ConnConfig, schema string, def topology.Definition) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect as the version's role %s: %w", cfg.User, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return runDDL(ctx, tx, schema, def) })
}

func (s *Store) createVersionOnce(ctx context.Context, nv NewVersion, def, opts []byte, role, password string) (*Version, error) {
	var created *Version
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		name := nv.Definition.Projection
		if _, err := tx.Exec(ctx, `INSERT INTO kreplay.projections (name) VALUES ($1) ON CONFLICT DO NOTHING`, name); err != nil {
			return err
		}
		proj, err := getProjection(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if nv.Live && proj.Live != "" {
			return refuse(ErrExists, "projection %q already has a live version (%s)", name, proj.Live)
		}
		var owner string
		var state State
		err = tx.QueryRow(ctx, `SELECT projection, state FROM kreplay.versions WHERE key = $1`, nv.Key).Scan(&owner, &state)
		if err == nil {
			return refuse(ErrExists, "replay key %q is already used by projection %q (state %s); choose another key", nv.Key, owner, state)
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		state = StateCreated
		switch {
		case nv.Live:
			state = StateLive
		case nv.Start != nil:
			state = StateReplaying
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kreplay.versions (key, projection, state, definition, definition_hash, options, started_at, role, role_password)
			VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END, $8, $9)`,
			nv.Key, name, state, def, nv.Definition.Hash(), opts, nv.Start != nil, role, password); err != nil {
			return err
		}
		if nv.Start != nil {
			if err := insertCheckpoints(ctx, tx, nv.Key, nv.Start); err != nil {
				return err
			}
		}
		if nv.Live {
			if err := s.pointViews(ctx, tx, name, "", nv.Key); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE kreplay.projections SET live_version = $2, updated_at = now() WHERE name = $1;`, name, nv.Key); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO kreplay.promotions (projection, kind, to_version) VALUES ($1, 'bootstrap', $2)`, name, nv.Key); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE kreplay.versions SET promoted_at = now() WHERE key = $1`, nv.Key); err != nil {
				return err
			}
		}
		if err := notify(ctx, tx, nv.Key); err != nil {
			return err
		}
		created, err = getVersion(ctx, tx, nv.Key, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	return created, nil
}

func insertCheckpoints(ctx context.Context, tx pgx.Tx, key string, starts []PartitionStart) error {
	topics := make([]string, len(starts))
	parts := make([]int32, len(starts))
	from := make([]int64, len(starts))
	to := make([]int64, len(starts))
	for i, p := range starts {
		topics[i], parts[i], from[i], to[i] = p.Topic, p.Partition, p.Start, p.Target
	}
	_, err := tx.Exec(ctx, `INSERT INTO kreplay.checkpoints (version, topic, partition, next_offset, start_offset, target_offset)
		SELECT $1, t, p, s, s, greatest(s, e) FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS u (t, p, s, e)`,
		key, topics, parts, from, to)
	return err
}

// StartVersion starts a created version at the given offsets: its checkpoints are written and
// it is replaying until it reaches the targets.
func (s *Store) StartVersion(ctx context.Context, key string, starts []PartitionStart) (*Version, error) {
	return s.transition(ctx, key, "start", []State{StateCreated}, func(tx pgx.Tx, v *Version) error {
		if err := insertCheckpoints(ctx, tx, key, starts); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE kreplay.versions SET state = 'replaying', started_at = now(), updated_at = now() WHERE key = $1`, key)
		return err
	})
}

// PauseVersion stops a running version; resume returns it to the state it had.
func (s *Store) PauseVersion(ctx context.Context, key string) (*Version, error) {
	return s.transition(ctx, key, "pause", []State{StateReplaying, StateTailing, StateRetired, StateLive}, func(tx pgx.Tx, v *Version) error {
		_, err := tx.Exec(ctx, `UPDATE kreplay.versions SET state = 'paused', resume_state = state, updated_at = now() WHERE key = $1`, key)
		return err
	})
}

// ResumeVersion returns a paused or failed version to the state it had. Resuming a failed
// version clears its error and retries the event it failed on. The fencing generations are
// reset: no member can be writing for a version that was not running, and the Kafka group may
// have been deleted (expired) meanwhile, restarting its generations.
func (s *Store) ResumeVersion(ctx context.Context, key string) (*Version, error) {
	return s.transition(ctx, key, "resume", []State{StatePaused, StateFailed}, func(tx pgx.Tx, v *Version) error {
		if v.ResumeState == "" {
			return fmt.Errorf("version %s has no state to resume to", key)
		}
		if _, err := tx.Exec(ctx, `UPDATE kreplay.checkpoints SET generation = -1, member = NULL WHERE version = $1`, key); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE kreplay.versions SET state = resume_state, resume_state = NULL, error = NULL, stalled = NULL, stalled_at = NULL,
			error_topic = NULL, error_partition = NULL, error_offset = NULL, updated_at = now() WHERE key = $1`, key)
		return err
	})
}

// FailVersion stops a running version with the reason (and the event) that stopped it.
func (s *Store) FailVersion(ctx context.Context, key string, verr VersionError) (*Version, error) {
	return s.transition(ctx, key, "fail", []State{StateReplaying, StateTailing, StateRetired, StateLive}, func(tx pgx.Tx, v *Version) error {
		var topic *string
		if verr.Topic != "" {
			topic = &verr.Topic
		}
		_, err := tx.Exec(ctx, `UPDATE kreplay.versions SET state = 'failed', resume_state = state, error = $2,
			error_topic = $3, error_partition = $4, error_offset = $5, updated_at = now() WHERE key = $1`,
			key, verr.Reason, topic, verr.Partition, verr.Offset)
		return err
	})
}

// SetStalled records why a running version does not advance ("" clears it). It notifies no one:
// status reads it at its next round.
func (s *Store) SetStalled(ctx context.Context, key, reason string) error {
	_, err := s.pool.Exec(ctx, `UPDATE kreplay.versions SET stalled = nullif($2, ''), stalled_at = CASE WHEN $2 = '' THEN NULL ELSE now() END
		WHERE key = $1`, key, reason)
	return err
}

// AddLateEvents adds n to the version's count of late events. It notifies no one: status reads
// it at its next round.
func (s *Store) AddLateEvents(ctx context.Context, key string, n int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE kreplay.versions SET late_events = late_events + $2 WHERE key = $1`, key, n)
	return err
}

// SetHold sets (or, with nil, clears) the offsets a version's runners must not apply past.
func (s *Store) SetHold(ctx context.Context, key string, hold Hold) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var arg any
		if hold != nil {
			arg = hold
		}
		tag, err := tx.Exec(ctx, `UPDATE kreplay.versions SET hold = $2, updated_at = now() WHERE key = $1`, key, arg)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return refuse(ErrNotFound, "no version %q", key)
		}
		return notify(ctx, tx, key)
	})
}

// transition runs fn on a version locked FOR UPDATE if its state is one of from, notifies
// every instance, and returns the version as it is after.
func (s *Store) transition(ctx context.Context, key, action string, from []State, fn func(pgx.Tx, *Version) error) (*Version, error) {
	var after *Version
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		v, err := getVersion(ctx, tx, key, true)
		if err != nil {
			return err
		}
		allowed := false
		for _, st := range from {
			allowed = allowed || v.State == st
		}
		if !allowed {
			return &TransitionError{Key: key, Action: action, State: v.State, Allowed: from}
		}
		if err := fn(tx, v); err != nil {
			return err
		}
		if err := notify(ctx, tx, key); err != nil {
			return err
		}
		after, err = getVersion(ctx, tx, key, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	return after, nil
}

// NotifyChannel is the LISTEN channel on which every catalog change of a version is announced
// (the payload is the version's key), so that every instance reconciles its runners at once.
const NotifyChannel = "kreplay_catalog"

func notify(ctx context.Context, tx pgx.Tx, key string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, key)
	return err
}
