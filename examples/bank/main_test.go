package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
)

// The example program, built and run as `go run ./examples/bank` runs it (on a database of its
// own), tells the whole story and exits 0: every check of its own passed.
func TestTheBankExampleRunsAndPassesItsChecks(t *testing.T) {
	t.Parallel()
	bin, remove, err := testkit.BuildBinary(".", "bank")
	require.NoError(t, err)
	t.Cleanup(remove)
	var b [5]byte
	_, _ = rand.Read(b[:])
	database := "kreplay_test_bank_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		require.NoError(t, store.DropDatabase(context.Background(), storetest.ServerURL(), database))
	})
	out, err := exec.Command(bin, "-database-url", storetest.ServerURL(), "-database", database, "-history", "5000", "-live", "500").CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err, "the example exits 0")
	text := string(out)
	require.NotContains(t, text, "FAILED")
	for _, want := range []string{
		"notifier reacted to 0 events: the history is not live",
		"notifier reacted to each of the 500 live events once",
		"status balances_v1: drift=true",
		"verify passed",
		"public.balances.events (version 2's column) matches the events",
	} {
		require.Contains(t, text, "ok     "+want)
	}
	require.Contains(t, text, "balances_v1 -> balances_v2 live")
	require.Contains(t, text, "live events reacted to, each once; none of the 5000 history events")
	require.Equal(t, 10, strings.Count(text, "\n   ok     "), "every check passed")
}

// A failed check makes the program's result an error: main exits 1.
func TestAFailedCheckFailsTheProgram(t *testing.T) {
	t.Parallel()
	s := &story{out: io.Discard}
	s.check(true, "fine")
	require.NoError(t, s.result())
	s.check(false, "balances match: %v", false)
	require.EqualError(t, s.result(), "1 checks failed: balances match: false")
}
