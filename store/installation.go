package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Installation is the identity of a catalog: the installation it belongs to and a random id
// that tells it from every other catalog, even one of the same name on the same cluster.
type Installation struct {
	Name      string
	CatalogID string
	Database  string // the PostgreSQL database that holds the catalog
	CreatedAt time.Time
}

// SetInstallation records name as the installation this catalog belongs to and returns the
// catalog's identity, and the name it had before when that was another and the catalog has
// versions ("" otherwise: a new catalog's name is the migration's default, and nothing of it
// goes by that name yet).
func (s *Store) SetInstallation(ctx context.Context, name string) (Installation, string, error) {
	var in Installation
	var previous string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT name, catalog_id::text, created_at, current_database() FROM kreplay.installation FOR UPDATE`).
			Scan(&previous, &in.CatalogID, &in.CreatedAt, &in.Database)
		if errors.Is(err, pgx.ErrNoRows) {
			// Only a hand-edited catalog lacks the row that migration 002 inserts.
			previous = name
			err = tx.QueryRow(ctx, `INSERT INTO kreplay.installation (name) VALUES ($1) RETURNING catalog_id::text, created_at, current_database()`, name).
				Scan(&in.CatalogID, &in.CreatedAt, &in.Database)
		}
		if err != nil || previous == name {
			return err
		}
		var used bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM kreplay.versions)`).Scan(&used); err != nil {
			return err
		}
		if !used {
			previous = name
		}
		_, err = tx.Exec(ctx, `UPDATE kreplay.installation SET name = $1, updated_at = now()`, name)
		return err
	})
	if err != nil {
		return Installation{}, "", err
	}
	in.Name = name
	if previous == name {
		previous = ""
	}
	return in, previous, nil
}
