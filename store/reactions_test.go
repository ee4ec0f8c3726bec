package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
)

// The reactors of a projection react to what its live version has committed, from where they
// started: never to the history a version replays, with no gap and no repeat across a promotion
// (the bound is the live version's checkpoints, which a promotion only moves forward), and one
// instance at a time (a lock; done moves by compare and set).
func TestReactionsFollowTheLiveVersion(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	pending := func() map[int32][2]int64 {
		t.Helper()
		live, rs, err := s.Reactions(ctx, "accounts")
		require.NoError(t, err)
		require.NotEmpty(t, live)
		out := map[int32][2]int64{}
		for _, r := range rs {
			out[r.Partition] = [2]int64{r.Done, r.Committed}
		}
		return out
	}
	setNext := func(key string, partition int32, next int64) {
		t.Helper()
		_, err := s.Pool().Exec(ctx, "UPDATE kreplay.checkpoints SET next_offset = $3 WHERE version = $1 AND partition = $2", key, partition, next)
		require.NoError(t, err)
	}

	started(t, s, "accounts_v1", true) // live at once, replaying offsets 0..99 of two partitions
	live, rs, err := s.Reactions(ctx, "accounts")
	require.NoError(t, err)
	require.Empty(t, live, "not started: no reactor has run for the projection")
	require.Empty(t, rs)
	ok, err := s.StartReactions(ctx, "accounts")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.StartReactions(ctx, "accounts")
	require.NoError(t, err)
	require.False(t, ok, "started once")
	require.Equal(t, map[int32][2]int64{0: {100, 0}, 1: {100, 0}}, pending(), "the history (0..99) is not reacted to")

	setNext("accounts_v1", 0, 120) // the live version caught up and applied 20 live events
	require.Equal(t, map[int32][2]int64{0: {100, 120}, 1: {100, 0}}, pending())

	// accounts_v2 replayed everything and is ahead of the live version; once it is live, what it
	// applied past the live version is to be reacted to as well.
	started(t, s, "accounts_v2", false)
	tailing(t, s, "accounts_v2")
	setNext("accounts_v2", 0, 130)
	setNext("accounts_v2", 1, 100)
	require.Equal(t, map[int32][2]int64{0: {100, 120}, 1: {100, 0}}, pending(), "a replay's progress is not the reactors' business")
	_, err = s.Swap(ctx, "accounts_v2", store.SwapPromote, []store.State{store.StateTailing}, store.SwapOptions{})
	require.NoError(t, err)
	require.Equal(t, map[int32][2]int64{0: {100, 130}, 1: {100, 100}}, pending())

	// done moves by compare and set: a second mover with the same view moves nothing.
	move := []store.ReactionMove{{TopicPartition: store.TopicPartition{Topic: "bank", Partition: 0}, From: 100, To: 130, Reacted: 30}}
	require.NoError(t, s.MoveReactions(ctx, "accounts", move))
	require.ErrorIs(t, s.MoveReactions(ctx, "accounts", move), store.ErrReactionsMoved)
	require.Equal(t, map[int32][2]int64{0: {130, 130}, 1: {100, 100}}, pending())
	require.Equal(t, int64(30), scalar(t, s, "SELECT sum(reacted) FROM kreplay.reactions WHERE projection = 'accounts'"))

	// A rollback to the retired version, which kept tailing: reacted from where the reactors are.
	setNext("accounts_v1", 0, 140)
	setNext("accounts_v1", 1, 100)
	_, err = s.Swap(ctx, "accounts_v1", store.SwapRollback, []store.State{store.StateRetired}, store.SwapOptions{})
	require.NoError(t, err)
	require.Equal(t, map[int32][2]int64{0: {130, 140}, 1: {100, 100}}, pending())

	// A partition the reactors have not met (created after they started) starts at its start
	// watermark: here 0, so every one of its events is reacted to.
	_, err = s.Pool().Exec(ctx, `INSERT INTO kreplay.checkpoints (version, topic, partition, next_offset, start_offset, target_offset)
		VALUES ('accounts_v1', 'bank', 2, 5, 0, 0)`)
	require.NoError(t, err)
	require.Equal(t, map[int32][2]int64{0: {130, 140}, 1: {100, 100}, 2: {0, 5}}, pending())

	// One instance at a time.
	l, err := s.TryReact(ctx, "accounts")
	require.NoError(t, err)
	require.NotNil(t, l)
	other, err := s.TryReact(ctx, "accounts")
	require.NoError(t, err)
	require.Nil(t, other, "held by the first")
	l.Release()
	require.Eventually(t, func() bool {
		l, err := s.TryReact(ctx, "accounts")
		if l != nil {
			l.Release()
		}
		return err == nil && l != nil
	}, 10e9, 50e6)
}
