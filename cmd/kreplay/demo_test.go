package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// The demo's scenario, small: it reports the promotion, zero reader errors and an exact live
// view, and leaves its database behind (dropped here).
func TestDemoScenario(t *testing.T) {
	t.Parallel()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "kreplay_demo_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := store.DropDatabase(context.Background(), storetest.ServerURL(), name); err != nil {
			t.Errorf("drop the demo's database and roles: %v", err)
		}
	})
	var out bytes.Buffer
	sum, err := runDemo(context.Background(), demoOptions{ServerURL: storetest.ServerURL(), Database: name,
		Events: 6000, Accounts: 300, Rate: 300, Readers: 3, Out: &out, Logger: slog.New(slog.DiscardHandler)})
	t.Log(out.String())
	require.NoError(t, err)
	require.True(t, sum.Exact)
	require.True(t, sum.Verified)
	require.Zero(t, sum.Errors)
	require.Positive(t, sum.Reads)
	require.Len(t, sum.Swaps, 3)
	require.Equal(t, []string{"balances_v2", "balances_v1", "balances_v2"}, []string{sum.Swaps[0].To, sum.Swaps[1].To, sum.Swaps[2].To})
	// The promotions add the events column (no flag needed); the rollback removes it (never refused).
	events := store.Column{Name: "events", Type: "bigint"}
	require.Equal(t, []store.ShapeChange{{View: "public.balances", Added: []store.Column{events}}}, sum.Swaps[0].ShapeChanges)
	require.Equal(t, []store.ShapeChange{{View: "public.balances", Removed: []store.Column{events}}}, sum.Swaps[1].ShapeChanges)
	require.Equal(t, sum.Swaps[0].ShapeChanges, sum.Swaps[2].ShapeChanges)
	require.Contains(t, out.String(), "view shape: public.balances: removes events bigint")
	require.Contains(t, out.String(), "schema balances_v1 dropped: true")
	require.True(t, strings.Contains(out.String(), "matches the events exactly"))
}
