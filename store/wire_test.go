package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

const everyArgYAML = `sources:
  - topic: bank
projections:
  - name: args
    sources: [bank]
    tables:
      - >-
        CREATE TABLE seen (event_id text, type text, aggregate_id text, version bigint,
        created_at timestamptz, data jsonb, amount bigint, topic text, part integer, off bigint)
    handlers:
      Deposited: >-
        INSERT INTO seen VALUES (@event_id, @type, @aggregate_id, @version, @created_at, @data,
        (@data->>'amount')::bigint, @topic, @partition, @offset)
      Counted: INSERT INTO seen (event_id, part) VALUES (@event_id, @created_at)
`

// Batches are encoded while the previous one executes (store/wire.go), with kreplay's own prepared
// statements, instead of by pgx when they are sent. Every argument must reach its column as pgx
// would have sent it: the rows equal what pgx's own Exec writes for the same events, for the first
// batch (encoded when it is sent, since nothing is prepared yet) and the next ones (encoded
// ahead), also across a reconnection.
func TestEncodedAheadBatchesWriteWhatPgxWrites(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	def := definition(t, everyArgYAML)
	a := claimedApplier(t, s, "args_v1", def, 0, 3)
	var err error

	at := time.Date(2026, 12, 7, 6, 30, 1, 123456789, time.FixedZone("x", 3600))
	ev := func(id string, partition int32, offset, version int64, data []byte) store.Item {
		return store.Item{Event: topology.Event{ID: id, Type: "Deposited", AggregateID: "acc-" + id, Version: version,
			CreatedAt: at.Add(time.Duration(offset) * time.Microsecond), Data: data,
			Topic: "bank", Partition: partition, Offset: offset}, Next: offset + 1}
	}
	batches := [][]store.Item{
		{ev("a", 0, 0, 1, []byte(`{"amount": 5, "note": "é\"x"}`)), ev("b", 3, 0, 9007199254740993, []byte(`{"amount": -2}`))},
		{ev("c", 0, 1, 0, []byte(`{"amount": 1e2}`)), ev("d", 3, 1, -1, nil)},
		{ev("e", 0, 2, 3, []byte(`[1, {"amount": "7"}]`))},
	}
	batches[1][1].Event.Data = []byte(`null`)
	p := a.NewPrepared()
	for i, b := range batches {
		if i == 2 {
			// A reconnection between Prepare and Execute: the batch was encoded with statements of a
			// connection that is gone; Execute prepares them again and encodes again.
			a.Prepare(p, 1, b)
			require.Equal(t, int64(1), scalar(t, s, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'kreplay:args_v1'`))
			_, err = a.Execute(ctx, p)
			require.True(t, store.IsTransient(err), "the terminated connection: %v", err)
			_, err = a.Execute(ctx, p)
			require.NoError(t, err)
			continue
		}
		a.Prepare(p, 1, b)
		_, err = a.Execute(ctx, p)
		require.NoError(t, err, "batch %d", i)
	}

	// The same events through pgx's own path, into a copy of the table.
	_, err = s.Pool().Exec(ctx, "CREATE TABLE args_v1.want (LIKE args_v1.seen)")
	require.NoError(t, err)
	hs, err := def.ParseHandlers()
	require.NoError(t, err)
	h := hs["Deposited"]
	for _, b := range batches {
		for _, it := range b {
			args := make([]any, len(h.Args))
			for i, arg := range h.Args {
				args[i] = it.Event.Arg(arg)
			}
			_, err := s.Pool().Exec(ctx, replaceOnce(t, h.Positional, "INTO seen", "INTO args_v1.want"), args...)
			require.NoError(t, err)
		}
	}
	require.Equal(t, int64(5), scalar(t, s, "SELECT count(*) FROM args_v1.seen"))
	require.Equal(t, int64(0), scalar(t, s, `SELECT count(*) FROM (
		(SELECT * FROM args_v1.seen EXCEPT ALL SELECT * FROM args_v1.want) UNION ALL
		(SELECT * FROM args_v1.want EXCEPT ALL SELECT * FROM args_v1.seen)) AS d`), "rows pgx would not have written")
	require.Equal(t, int64(103), scalar(t, s, "SELECT sum(amount) FROM args_v1.seen"))
	require.Equal(t, int64(5), scalar(t, s, "SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'args_v1'"))
	require.Equal(t, int64(5), scalar(t, s, "SELECT sum(next_offset) FROM kreplay.checkpoints WHERE version = 'args_v1'"))

	// An argument that pgx cannot encode for its parameter (a time for an integer) is found event
	// by event, as on pgx's path, and reported as that event's HandlerError; nothing of its batch
	// is written.
	bad := ev("f", 0, 3, 4, []byte(`{"amount": 1}`))
	bad.Event.Type = "Counted"
	a.Prepare(p, 1, []store.Item{ev("g", 3, 2, 5, []byte(`{"amount": 1}`)), bad})
	_, err = a.Execute(ctx, p)
	var herr *store.HandlerError
	require.True(t, errors.As(err, &herr), "a HandlerError: %v", err)
	require.Equal(t, 1, herr.Index)
	require.Contains(t, herr.Error(), `"Counted"`)
	require.Equal(t, int64(5), scalar(t, s, "SELECT count(*) FROM args_v1.seen"))
	require.Equal(t, int64(5), scalar(t, s, "SELECT sum(next_offset) FROM kreplay.checkpoints WHERE version = 'args_v1'"))
}

// A table changed under prepared statements (a column retyped) makes the batch fail once, as an
// error of the environment; the statements are then prepared again, and the batch goes through
// with the new types. (Kept prepared, they failed with 42804 for good, and the lane retried
// forever.)
func TestARetypedColumnIsPreparedAgain(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	def := definition(t, `sources:
  - topic: bank
projections:
  - name: ids
    sources: [bank]
    tables:
      - CREATE TABLE seen (aggregate_id text, event_id text)
    handlers:
      Deposited: INSERT INTO seen VALUES (@aggregate_id, @event_id)
`)
	a := claimedApplier(t, s, "ids_v1", def, 0)
	const id = "0b6f2a1e-7c1d-4a51-9f3e-2b7d1c9a8e10"
	it := func(offset int64) store.Item {
		return store.Item{Event: topology.Event{ID: id, Type: "Deposited", AggregateID: "a", Topic: "bank", Offset: offset}, Next: offset + 1}
	}
	_, err := a.Apply(ctx, 1, []store.Item{it(0)})
	require.NoError(t, err)

	_, err = s.Pool().Exec(ctx, "ALTER TABLE ids_v1.seen DROP COLUMN event_id, ADD COLUMN event_id uuid")
	require.NoError(t, err)
	_, err = a.Apply(ctx, 1, []store.Item{it(1)})
	require.Error(t, err, "the statement prepared for a text column meets a uuid column")
	var herr *store.HandlerError
	require.False(t, errors.As(err, &herr), "a table that changed is not the event's fault: %v", err)
	_, err = a.Apply(ctx, 1, []store.Item{it(1)})
	require.NoError(t, err, "prepared again, for the uuid column")
	require.Equal(t, int64(1), scalar(t, s, "SELECT count(*) FROM ids_v1.seen WHERE event_id = $1::uuid", id))
	require.Equal(t, int64(2), scalar(t, s, "SELECT next_offset FROM kreplay.checkpoints WHERE version = 'ids_v1'"))
}

// claimedApplier creates version key of def, started at offset 0 of the given partitions of
// bank (targets 100), claims them for generation 1, and returns an applier of it.
func claimedApplier(t *testing.T, s *store.Store, key string, def topology.Definition, partitions ...int32) *store.Applier {
	t.Helper()
	ctx := context.Background()
	var starts []store.PartitionStart
	var tps []store.TopicPartition
	for _, p := range partitions {
		starts = append(starts, store.PartitionStart{Topic: "bank", Partition: p, Target: 100})
		tps = append(tps, store.TopicPartition{Topic: "bank", Partition: p})
	}
	_, err := s.CreateVersion(ctx, store.NewVersion{Key: key, Definition: def, Start: starts})
	require.NoError(t, err)
	_, err = s.Claim(ctx, key, 1, "m", tps, false)
	require.NoError(t, err)
	a, err := s.NewApplier(store.ApplierConfig{Key: key, Definition: def})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close(context.Background()) })
	return a
}
