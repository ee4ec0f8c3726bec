package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Reactions: where the reactors of a projection are (migration 005). The events they may react to
// are those the projection's live version has committed, bounded by its checkpoints; done, per
// partition, is the next offset they react to.

// ErrReactionsMoved: the reactions of a projection were moved by someone else (another instance
// took them over): the caller no longer reacts for it.
var ErrReactionsMoved = errors.New("the reactions were moved by another instance")

// ReactionRange is what the reactors of a projection have to react to in one partition: the
// events at offsets Done..Committed-1 (none when Committed <= Done).
type ReactionRange struct {
	TopicPartition
	Done      int64 // the next offset the reactors react to
	Committed int64 // the live version's checkpoint: the next offset it applies
	Reacted   int64 // events reacted to so far
}

// Pending is the number of offsets to react to (records, transaction markers included).
func (r ReactionRange) Pending() int64 { return max(0, r.Committed-r.Done) }

// StartReactions records where the reactors of a projection start, the first time a program
// that has reactors for it starts: at the live version's checkpoints, or at its start watermarks
// while it replays its history (a version just bootstrapped), so that history is never reacted to
// and every event committed from then on is. It does nothing when the projection's reactions have
// started already, or when it has no live version yet (false then).
func (s *Store) StartReactions(ctx context.Context, projection string) (bool, error) {
	var started bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The projection's row serialises two instances starting at once.
		p, err := getProjection(ctx, tx, projection, true)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM kreplay.reactions WHERE projection = $1)", projection).Scan(&exists); err != nil || exists || p.Live == "" {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO kreplay.reactions (projection, topic, partition, done)
			SELECT $1, topic, partition, greatest(next_offset, target_offset) FROM kreplay.checkpoints WHERE version = $2`, projection, p.Live)
		started = err == nil && tag.RowsAffected() > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("start the reactions of %s: %w", projection, err)
	}
	return started, nil
}

// Reactions returns, for each partition of the projection's live version, what its reactors have
// to react to, and the live version's key ("" when there is none, or when the reactions have not
// started: see StartReactions). A partition the reactors have not met yet (one created after they
// started, or a topic the live version reads and the one before did not) starts at the live
// version's start watermark there: what it replayed as history is not reacted to.
func (s *Store) Reactions(ctx context.Context, projection string) (string, []ReactionRange, error) {
	const q = `SELECT p.live_version, c.topic, c.partition, c.next_offset, r.done, coalesce(r.reacted, 0)
		FROM kreplay.projections p JOIN kreplay.checkpoints c ON c.version = p.live_version
		LEFT JOIN kreplay.reactions r ON r.projection = p.name AND r.topic = c.topic AND r.partition = c.partition
		WHERE p.name = $1 AND EXISTS (SELECT 1 FROM kreplay.reactions WHERE projection = $1)
		ORDER BY c.topic, c.partition`
	for attempt := 0; ; attempt++ {
		rows, err := s.pool.Query(ctx, q, projection)
		if err != nil {
			return "", nil, fmt.Errorf("reactions of %s: %w", projection, err)
		}
		var live string
		var out []ReactionRange
		missing := false
		var r ReactionRange
		var done *int64
		_, err = pgx.ForEachRow(rows, []any{&live, &r.Topic, &r.Partition, &r.Committed, &done, &r.Reacted}, func() error {
			if done == nil {
				missing = true
				return nil
			}
			r.Done = *done
			out = append(out, r)
			return nil
		})
		if err != nil {
			return "", nil, fmt.Errorf("reactions of %s: %w", projection, err)
		}
		if !missing || attempt > 0 {
			return live, out, nil
		}
		if _, err := s.pool.Exec(ctx, `INSERT INTO kreplay.reactions (projection, topic, partition, done)
			SELECT $1, c.topic, c.partition, greatest(c.start_offset, c.target_offset)
			FROM kreplay.checkpoints c WHERE c.version = $2 ON CONFLICT DO NOTHING`, projection, live); err != nil {
			return "", nil, fmt.Errorf("reactions of %s: %w", projection, err)
		}
	}
}

// ReactionMove moves one partition's done from From to To, having reacted to Reacted events.
type ReactionMove struct {
	TopicPartition
	From, To, Reacted int64
}

// MoveReactions records that the reactors went from each move's From to its To, all or nothing;
// it returns ErrReactionsMoved, and records nothing, when a partition is not at its From any
// more (another instance reacted meanwhile).
func (s *Store) MoveReactions(ctx context.Context, projection string, moves []ReactionMove) error {
	if len(moves) == 0 {
		return nil
	}
	topics := make([]string, len(moves))
	parts := make([]int32, len(moves))
	from := make([]int64, len(moves))
	to := make([]int64, len(moves))
	reacted := make([]int64, len(moves))
	for i, m := range moves {
		topics[i], parts[i], from[i], to[i], reacted[i] = m.Topic, m.Partition, m.From, m.To, m.Reacted
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE kreplay.reactions AS r SET done = u.d, reacted = r.reacted + u.n, updated_at = now()
			FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[]) AS u (t, p, f, d, n)
			WHERE r.projection = $1 AND r.topic = u.t AND r.partition = u.p AND r.done = u.f`,
			projection, topics, parts, from, to, reacted)
		if err != nil {
			return fmt.Errorf("move the reactions of %s: %w", projection, err)
		}
		if tag.RowsAffected() != int64(len(moves)) {
			return fmt.Errorf("%w (projection %s)", ErrReactionsMoved, projection)
		}
		return nil
	})
}

// reactionsLockKey is the advisory lock of a projection's reactions (hashtextextended of this
// text and the projection's name).
const reactionsLockKey = "kreplay reactions "

// TryReact tries to become the instance that runs the reactors of a projection: a session
// advisory lock on a connection of its own, as TryLead. It returns nil (and no error) when
// another instance holds it.
func (s *Store) TryReact(ctx context.Context, projection string) (*Leadership, error) {
	return s.tryLock(ctx, "reactions:"+projection, "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", reactionsLockKey+projection)
}
