package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
)

// Every catalog has an identity of its own: a random id that a rename keeps and another
// catalog does not share.
func TestInstallationIdentity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, url := open(t)
	in, previous, err := s.SetInstallation(ctx, "kreplay")
	require.NoError(t, err)
	require.Empty(t, previous)
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`, in.CatalogID)
	require.Equal(t, "kreplay", in.Name)
	require.Contains(t, url, "/"+in.Database+"?")

	// A rename of a catalog that has versions is reported (their topics and groups change names);
	// a new catalog's first name is not a rename.
	started(t, s, "accounts_v1", true)
	renamed, previous, err := s.SetInstallation(ctx, "shop")
	require.NoError(t, err)
	require.Equal(t, "kreplay", previous)
	require.Equal(t, in.CatalogID, renamed.CatalogID, "a rename keeps the catalog's identity")
	again, previous, err := s.SetInstallation(ctx, "shop")
	require.NoError(t, err)
	require.Empty(t, previous)
	require.Equal(t, in.CatalogID, again.CatalogID)

	other, _ := open(t)
	theirs, _, err := other.SetInstallation(ctx, "kreplay")
	require.NoError(t, err)
	require.NotEqual(t, in.CatalogID, theirs.CatalogID, "another catalog of the same name is another catalog")

	fresh, _ := open(t)
	_, previous, err = fresh.SetInstallation(ctx, "walk")
	require.NoError(t, err)
	require.Empty(t, previous, "a new catalog named at its first start was not renamed")
}

// An expired or canceled command is recorded under its id, so that it is never run later; a
// later claim of the id gets that record back.
func TestCommandsRecordedWithoutRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := open(t)
	deadline := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	claimed, _, err := s.ClaimCommand(ctx, store.CommandRecord{ID: "c1", Command: "promote", Replay: "b_v2", State: store.CommandExpired,
		Deadline: &deadline, Error: "expired: its deadline had passed", ExecutedBy: "test"})
	require.NoError(t, err)
	require.True(t, claimed)
	claimed, _, err = s.ClaimCommand(ctx, store.CommandRecord{ID: "c2", Command: "pause", Replay: "b_v2", State: store.CommandCanceled,
		CanceledBy: "c3", Error: "canceled before it ran", ExecutedBy: "test"})
	require.NoError(t, err)
	require.True(t, claimed)

	claimed, prev, err := s.ClaimCommand(ctx, store.CommandRecord{ID: "c1", Command: "promote", Replay: "b_v2", ExecutedBy: "test"})
	require.NoError(t, err)
	require.False(t, claimed, "an expired command is never claimed to run")
	require.Equal(t, store.CommandExpired, prev.State)
	require.False(t, prev.OK)
	require.Equal(t, "expired: its deadline had passed", prev.Error)
	require.True(t, deadline.Equal(*prev.Deadline))
	require.NotNil(t, prev.FinishedAt)

	c2, err := s.Command(ctx, "c2")
	require.NoError(t, err)
	require.Equal(t, store.CommandCanceled, c2.State)
	require.Equal(t, "c3", c2.CanceledBy)
	claimed, _, err = s.ClaimCommand(ctx, store.CommandRecord{ID: "c2", Command: "pause", Replay: "b_v2", ExecutedBy: "test"})
	require.NoError(t, err)
	require.False(t, claimed, "a canceled command is never claimed to run")

	claimed, _, err = s.ClaimCommand(ctx, store.CommandRecord{ID: "c4", Command: "start", Replay: "b_v2", ExecutedBy: "test"})
	require.NoError(t, err)
	require.True(t, claimed)
	c4, err := s.Command(ctx, "c4")
	require.NoError(t, err)
	require.Equal(t, store.CommandRunning, c4.State)
	require.Nil(t, c4.FinishedAt)
}
