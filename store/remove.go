package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kreplay/kreplay/internal/retry"
)

// RemoveVersion marks a version removed, which stops its consumers on every instance. The live
// version cannot be removed. Removing a removed version returns it unchanged (so that a remove
// interrupted before DropVersion can be run again).
func (s *Store) RemoveVersion(ctx context.Context, key string) (*Version, error) {
	var after *Version
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		v, err := getVersion(ctx, tx, key, true)
		if err != nil {
			return err
		}
		if v.State == StateRemoved {
			after = v
			return nil
		}
		proj, err := getProjection(ctx, tx, v.Projection, true)
		if err != nil {
			return err
		}
		if proj.Live == key {
			return refuse(ErrInvalidTransition, "cannot remove %s: it is the live version of %s; promote another version (or roll back) first",
				key, v.Projection)
		}
		if _, err := tx.Exec(ctx, `UPDATE kreplay.versions SET state = 'removed', resume_state = NULL, hold = NULL,
			removed_at = now(), updated_at = now() WHERE key = $1`, key); err != nil {
			return err
		}
		if proj.Previous == key {
			if _, err := tx.Exec(ctx, `UPDATE kreplay.projections SET previous_version = NULL WHERE name = $1`, v.Projection); err != nil {
				return err
			}
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

// DropVersion drops a removed version's schema, checkpoints and role (with what the role owns
// and was granted). Its batches in flight finish first (the schema's locks wait for them, up to a
// minute); later ones are refused by advance.
func (s *Store) DropVersion(ctx context.Context, key string) error {
	v, err := s.Version(ctx, key)
	if err != nil {
		return err
	}
	if v.State != StateRemoved {
		return fmt.Errorf("drop %s: it is %s, not removed", key, v.State)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// The live views lose their branch for it first (route.go): DROP SCHEMA ... CASCADE would
	// drop a view that still reads its tables.
	if err := s.Route(ctx, v.Projection); err != nil {
		return fmt.Errorf("drop %s: %w", key, err)
	}
	return transient(ctx, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'"); err != nil {
				return err
			}
			if err := s.checkNotRead(ctx, tx, key); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+ident(key)+" CASCADE"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "DELETE FROM kreplay.source_topics WHERE version = $1", key); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "DELETE FROM kreplay.checkpoints WHERE version = $1", key); err != nil {
				return err
			}
			if v.Role != "" {
				if err := dropRole(ctx, tx, v.Role); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, "UPDATE kreplay.versions SET role_password = NULL WHERE key = $1", key)
			return err
		})
	})
}

// transient retries fn until it succeeds, fails for a reason that is not transient, or ctx ends.
func transient(ctx context.Context, fn func(context.Context) error) error {
	return retry.Policy{Max: 2 * time.Second, Retryable: IsTransient}.Do(ctx, fn)
}

// Dropped reports whether a removed version's schema, checkpoints and role are all gone (a
// removal that a crash interrupted has some of them left).
func (s *Store) Dropped(ctx context.Context, key string) (bool, error) {
	var left bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)
		OR EXISTS (SELECT 1 FROM kreplay.checkpoints WHERE version = $1)
		OR EXISTS (SELECT 1 FROM kreplay.versions v JOIN pg_roles r ON r.rolname = v.role WHERE v.key = $1)`, key).Scan(&left)
	return !left, err
}
