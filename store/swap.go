package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kreplay/kreplay/internal/retry"
)

// ErrBehind: the version to make live has not yet applied every offset the live one has, so
// readers would see the state go back. The swap is retried shortly.
var ErrBehind = errors.New("the new version has not applied every offset the live one has")

// SwapKind says why a projection's live version changes.
type SwapKind string

// Kinds of swaps.
const (
	SwapPromote  SwapKind = "promote"
	SwapRollback SwapKind = "rollback"
)

// SwapResult is a completed swap.
type SwapResult struct {
	Projection string
	From, To   string
	Kind       SwapKind
	Attempts   int           // attempts, including those that hit lock_timeout or found the new version behind
	Duration   time.Duration // of the successful transaction
	// ShapeChanges is how the swap changed the columns readers of the live views see.
	ShapeChanges []ShapeChange
	// Routed: the views had a branch for both versions (route.go); the swap changed only the
	// catalog and took no lock on the views.
	Routed bool
}

// SwapOptions are a swap's options.
type SwapOptions struct {
	// AllowShapeChange lets a promotion remove, retype or move a column of a live view (or drop
	// a view); without it such a promotion is refused with a *ShapeChangeError. A rollback is
	// never refused for its shape: it is the way back in an emergency.
	AllowShapeChange bool
}

// Swap makes `to` the live version of its projection in one transaction: it locks both
// versions' checkpoints, requires `to` to have applied at least every offset the live version
// has, repoints every view of the projection in the live schema (keeping their grants), records
// the switch, makes `to` live and the previous live version retired (it keeps tailing for
// rollback). `to` must be in one of the allowed states. Each attempt takes the views' locks
// with lock_timeout, so that a long-running reader makes the swap retry instead of queueing
// every other reader behind it; attempts are retried with backoff until ctx ends. A promotion
// that would change the views' shape in a way readers can break on is refused unless
// opts.AllowShapeChange (see ShapeChange.Breaking); the result lists every shape change.
func (s *Store) Swap(ctx context.Context, to string, kind SwapKind, allowed []State, opts SwapOptions) (*SwapResult, error) {
	backoff := retry.NewBackoff(20*time.Millisecond, time.Second)
	var lastErr error
	for attempt := 1; ; attempt++ {
		start := time.Now()
		res, err := s.swapOnce(ctx, to, kind, allowed, opts)
		if err == nil {
			res.Attempts, res.Duration = attempt, time.Since(start)
			return res, nil
		}
		if ctx.Err() != nil && lastErr != nil {
			// The budget ended during an attempt: say why the earlier ones did not go through.
			return nil, fmt.Errorf("swap to %s: gave up after %d attempts: %w", to, attempt, lastErr)
		}
		// IsTransient covers lock_timeout (55P03) and conflicts with concurrent transactions.
		retryable := errors.Is(err, ErrBehind) || IsTransient(err)
		if !retryable {
			return nil, err
		}
		lastErr = err
		if !retry.Sleep(ctx, backoff.Next()) {
			return nil, fmt.Errorf("swap to %s: gave up after %d attempts: %w", to, attempt, lastErr)
		}
	}
}

func (s *Store) swapOnce(ctx context.Context, to string, kind SwapKind, allowed []State, opts SwapOptions) (*SwapResult, error) {
	var res *SwapResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Row locks wait for the batch in flight of each applier; views wait for readers, and
		// only as long as lock_timeout.
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
			return err
		}
		v, err := getVersion(ctx, tx, to, true)
		if err != nil {
			return err
		}
		ok := false
		for _, st := range allowed {
			ok = ok || v.State == st
		}
		if !ok {
			return &TransitionError{Key: to, Action: string(kind), State: v.State, Allowed: allowed}
		}
		proj, err := getProjection(ctx, tx, v.Projection, true)
		if err != nil {
			return err
		}
		from := proj.Live
		if from == to {
			return fmt.Errorf("%s is already the live version of %s", to, v.Projection)
		}
		if err := checkNotBehind(ctx, tx, from, to, v.Topics()); err != nil {
			return err
		}
		shape, err := s.shapeChanges(ctx, tx, from, to)
		if err != nil {
			return err
		}
		if breaking := BreakingChanges(shape); kind == SwapPromote && !opts.AllowShapeChange && len(breaking) > 0 {
			return &ShapeChangeError{Key: to, Changes: breaking}
		}
		// Views routed over both versions (route.go) stay as they are: the swap is the update of
		// kreplay.projections below, and takes no lock a reader waits for.
		routed, err := s.routedTo(ctx, tx, from, to, shape)
		if err != nil {
			return err
		}
		plan := &viewPlan{}
		if !routed {
			// Everything that only reads the catalog happens before the views are locked, so
			// that readers wait for the swap only while it locks, runs one pipeline and commits.
			if plan, err = s.planViews(ctx, tx, v.Projection, from, to); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", s.cfg.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			if len(plan.existing) > 0 {
				if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(plan.existing, ", ")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
					return err
				}
			}
		}
		b := &pgx.Batch{}
		for _, st := range plan.statements {
			b.Queue(st.sql)
		}
		b.Queue(`UPDATE kreplay.projections SET live_version = $2, previous_version = nullif($3, ''), updated_at = now() WHERE name = $1`,
			v.Projection, to, from)
		b.Queue(`UPDATE kreplay.versions SET state = 'live', promoted_at = now(), retired_at = NULL, updated_at = now() WHERE key = $1`, to)
		if from != "" {
			// The previous live version keeps tailing for rollback, unless it was not running.
			b.Queue(`UPDATE kreplay.versions SET state = CASE WHEN state = 'live' THEN 'retired' ELSE state END,
				resume_state = CASE WHEN state IN ('paused', 'failed') THEN 'retired' ELSE resume_state END,
				retired_at = now(), updated_at = now() WHERE key = $1`, from)
			b.Queue("SELECT pg_notify($1, $2)", NotifyChannel, from)
		}
		b.Queue(`INSERT INTO kreplay.promotions (projection, kind, from_version, to_version) VALUES ($1, $2, nullif($3, ''), $4)`,
			v.Projection, kind, from, to)
		b.Queue("SELECT pg_notify($1, $2)", NotifyChannel, to)
		br := tx.SendBatch(ctx, b)
		for i := range b.QueuedQueries {
			if _, err := br.Exec(); err != nil {
				_ = br.Close()
				if i < len(plan.statements) {
					return &statementError{what: plan.statements[i].what, err: err}
				}
				return err
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
		res = &SwapResult{Projection: v.Projection, From: from, To: to, Kind: kind, ShapeChanges: shape, Routed: routed}
		return nil
	})
	return res, err
}

// checkNotBehind locks both versions' checkpoints (waiting for their batches in flight) and
// requires `to` to be at or past `from` in every partition of the topics `to` consumes
// (toTopics). A partition `to` has no checkpoint for (one added to a topic after it started, not
// claimed yet) is at offset 0: `to` has applied nothing of it.
func checkNotBehind(ctx context.Context, tx pgx.Tx, from, to string, toTopics []string) error {
	pos, err := positions(ctx, tx, true, from, to)
	if err != nil {
		return err
	}
	var behind []string
	for tp, liveNext := range pos[from] {
		if !slices.Contains(toTopics, tp.Topic) {
			continue // a source the new definition (or its --topics) dropped
		}
		if newNext := pos[to][tp]; newNext < liveNext {
			behind = append(behind, fmt.Sprintf("%s[%d]: %d < %d", tp.Topic, tp.Partition, newNext, liveNext))
		}
	}
	if len(behind) > 0 {
		sort.Strings(behind)
		return fmt.Errorf("%w (%s)", ErrBehind, strings.Join(behind, ", "))
	}
	return nil
}

// NewestRetired is the projection's most recently retired version that is still retired (the
// target of a rollback).
func (s *Store) NewestRetired(ctx context.Context, projection string) (string, error) {
	var key string
	err := s.pool.QueryRow(ctx, `SELECT key FROM kreplay.versions WHERE projection = $1 AND state = 'retired'
		ORDER BY retired_at DESC NULLS LAST, updated_at DESC LIMIT 1`, projection).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", refuse(ErrNotFound, "projection %q has no retired version to roll back to", projection)
	}
	return key, err
}

// Promotion is one recorded switch of a projection's live version.
type Promotion struct {
	Projection string
	Kind       string
	From, To   string
	At         time.Time
}

// Promotions lists a projection's switches, oldest first.
func (s *Store) Promotions(ctx context.Context, projection string) ([]Promotion, error) {
	rows, err := s.pool.Query(ctx, `SELECT projection, kind, coalesce(from_version, ''), to_version, at
		FROM kreplay.promotions WHERE projection = $1 ORDER BY id`, projection)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Promotion, error) {
		var p Promotion
		err := r.Scan(&p.Projection, &p.Kind, &p.From, &p.To, &p.At)
		return p, err
	})
}
