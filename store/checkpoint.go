package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// TopicPartition names one partition of one topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string { return fmt.Sprintf("%s[%d]", tp.Topic, tp.Partition) }

// Checkpoint is a version's position in one partition.
type Checkpoint struct {
	Version      string
	Topic        string
	Partition    int32
	NextOffset   int64 // the next offset to apply
	StartOffset  int64 // where the version started
	TargetOffset int64 // the high watermark when it started
	Applied      int64 // events consumed and committed
	Skipped      int64 // poison events skipped or dead-lettered
	Generation   int32 // consumer-group generation that owns the partition
	Member       string
	UpdatedAt    time.Time
}

// Claimed is where a claimed partition resumes and the offset it must reach to have caught up.
type Claimed struct {
	Next   int64
	Target int64
}

// Claim takes over partitions of a version for a consumer-group generation and returns where to
// resume in each (the checkpoints are the truth, not the group's committed offsets). From then
// on, writes by any older generation are refused (see Applier.Apply). A claim by a generation
// older than the stored owner's fails with ErrFenced, unless force is set.
func (s *Store) Claim(ctx context.Context, key string, generation int32, member string, tps []TopicPartition, force bool) (map[TopicPartition]Claimed, error) {
	topics := make([]string, len(tps))
	parts := make([]int32, len(tps))
	for i, tp := range tps {
		topics[i], parts[i] = tp.Topic, tp.Partition
	}
	rows, err := s.pool.Query(ctx, "SELECT topic, partition, next_offset, target_offset FROM kreplay.claim($1, $2, $3, $4, $5, $6)",
		key, generation, member, topics, parts, force)
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", key, catalogError(err))
	}
	out := make(map[TopicPartition]Claimed, len(tps))
	var tp TopicPartition
	var c Claimed
	_, err = pgx.ForEachRow(rows, []any{&tp.Topic, &tp.Partition, &c.Next, &c.Target}, func() error {
		out[tp] = c
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", key, catalogError(err))
	}
	return out, nil
}

const checkpointColumns = `version, topic, partition, next_offset, start_offset, target_offset, applied_events,
	skipped_events, generation, coalesce(member, ''), updated_at`

func scanCheckpoint(row pgx.CollectableRow) (Checkpoint, error) {
	var c Checkpoint
	err := row.Scan(&c.Version, &c.Topic, &c.Partition, &c.NextOffset, &c.StartOffset, &c.TargetOffset,
		&c.Applied, &c.Skipped, &c.Generation, &c.Member, &c.UpdatedAt)
	return c, err
}

// Checkpoints returns a version's checkpoints, by topic and partition.
func (s *Store) Checkpoints(ctx context.Context, key string) ([]Checkpoint, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+checkpointColumns+" FROM kreplay.checkpoints WHERE version = $1 ORDER BY topic, partition", key)
	if err != nil {
		return nil, fmt.Errorf("checkpoints of %s: %w", key, err)
	}
	return pgx.CollectRows(rows, scanCheckpoint)
}

// AllCheckpoints returns every version's checkpoints, by version key.
func (s *Store) AllCheckpoints(ctx context.Context) (map[string][]Checkpoint, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+checkpointColumns+" FROM kreplay.checkpoints ORDER BY version, topic, partition")
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	all, err := pgx.CollectRows(rows, scanCheckpoint)
	if err != nil {
		return nil, err
	}
	out := map[string][]Checkpoint{}
	for _, c := range all {
		out[c.Version] = append(out[c.Version], c)
	}
	return out, nil
}

// positions reads the next offsets of versions' partitions (version -> partition -> next offset)
// in the transaction, locking the rows FOR UPDATE when lock is set.
func positions(ctx context.Context, tx pgx.Tx, lock bool, keys ...string) (map[string]map[TopicPartition]int64, error) {
	sql := "SELECT version, topic, partition, next_offset FROM kreplay.checkpoints WHERE version = ANY($1) ORDER BY version, topic, partition"
	if lock {
		sql += " FOR UPDATE"
	}
	rows, err := tx.Query(ctx, sql, keys)
	if err != nil {
		return nil, err
	}
	pos := map[string]map[TopicPartition]int64{}
	for _, k := range keys {
		pos[k] = map[TopicPartition]int64{}
	}
	var key string
	var tp TopicPartition
	var next int64
	_, err = pgx.ForEachRow(rows, []any{&key, &tp.Topic, &tp.Partition, &next}, func() error {
		pos[key][tp] = next
		return nil
	})
	return pos, err
}

// VacuumCheckpoints vacuums kreplay.checkpoints. Every batch updates its rows; when a
// transaction anywhere on the server keeps PostgreSQL from pruning the versions they replace,
// updates go to new pages with new index entries, and kreplay.advance reads all of them until
// a vacuum: without one (autovacuum off, or behind) the cost of a batch grows with the history.
// The table is small, so a vacuum takes milliseconds; it takes no lock that writers wait for.
func (s *Store) VacuumCheckpoints(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, "VACUUM kreplay.checkpoints"); err != nil {
		return fmt.Errorf("vacuum kreplay.checkpoints: %w", err)
	}
	return nil
}
