package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// SourceTopicIDs are the Kafka topic ids recorded for each version's source topics (version ->
// topic -> id), as first seen.
func (s *Store) SourceTopicIDs(ctx context.Context) (map[string]map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT version, topic, topic_id FROM kreplay.source_topics`)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	var version, topic, id string
	_, err = pgx.ForEachRow(rows, []any{&version, &topic, &id}, func() error {
		if out[version] == nil {
			out[version] = map[string]string{}
		}
		out[version][topic] = id
		return nil
	})
	return out, err
}

// RecordSourceTopicID records the id of a version's source topic, unless one is recorded.
func (s *Store) RecordSourceTopicID(ctx context.Context, version, topic, id string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO kreplay.source_topics (version, topic, topic_id) VALUES ($1, $2, $3)
		ON CONFLICT DO NOTHING`, version, topic, id)
	return err
}
