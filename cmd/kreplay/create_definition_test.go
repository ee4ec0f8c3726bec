package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// An operator who edited the projection in their config file and runs `kreplay create` before
// the instances run that file is refused, with the reason and the fix, instead of getting a
// replay of the old definition without a word. With the same file, create works; a client
// config without the projection sends no expectation.
func TestCreateRefusesADefinitionServeDoesNotRun(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(200)
	e.serveInProcess()
	e.waitCaughtUp("balances_v1")

	served, err := os.ReadFile(e.config)
	require.NoError(t, err)
	edited := strings.Replace(string(served), "updated_at timestamptz NOT NULL", "updated_at timestamptz NOT NULL, note text", 1)
	require.NotEqual(t, string(served), edited)
	editedPath := filepath.Join(t.TempDir(), "edited.yaml")
	require.NoError(t, os.WriteFile(editedPath, []byte(edited), 0o600))

	out, err := e.cliWith(editedPath, "create", "balances_v2", "-p", "balances")
	require.Error(t, err, out)
	require.Regexp(t, `^create balances_v2: serve runs another definition of projection "balances" \(hash sha256:[0-9a-f]{12}\) than the config you sent the command with \(hash sha256:[0-9a-f]{12}\): roll your config out`, err.Error())
	_, err = e.cli("status", "balances_v2")
	require.ErrorContains(t, err, `unknown replay "balances_v2"`, "nothing was created")

	require.Contains(t, e.mustCLI("create", "balances_v2", "-p", "balances"), "created balances_v2")

	brokersOnly := filepath.Join(t.TempDir(), "client.yaml")
	require.NoError(t, os.WriteFile(brokersOnly, []byte(strings.SplitN(string(served), "postgres:", 2)[0]), 0o600))
	out, err = e.cliWith(brokersOnly, "create", "balances_v3", "-p", "balances")
	require.NoError(t, err)
	require.Contains(t, out, "created balances_v3")
}
