package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// serveInProcess runs `kreplay serve -c config` through the root command until the end of the
// test, and checks that it then stops cleanly.
func (e *env) serveInProcess() {
	e.t.Helper()
	e.serveUntilStopped()
}

// cli runs one CLI command against the test's config.
func (e *env) cli(args ...string) (string, error) {
	e.t.Helper()
	return e.cliWith(e.config, args...)
}

// cliWith runs one CLI command with another config file.
func (e *env) cliWith(config string, args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stdout, _, err := execute(ctx, append(args, "-c", config)...)
	return stdout, err
}

// mustCLI runs a command that must succeed and returns its stdout.
func (e *env) mustCLI(args ...string) string {
	e.t.Helper()
	out, err := e.cli(args...)
	require.NoError(e.t, err, "kreplay %s", strings.Join(args, " "))
	return out
}

// waitCaughtUp waits until `status -o json` shows key applied every event produced with no lag.
func (e *env) waitCaughtUp(key string) statusJSON {
	e.t.Helper()
	var st statusJSON
	eventually(e.t, 45*time.Second, func() (bool, string) {
		out, err := e.cli("status", "-o", "json", "--timeout", "2s")
		if err != nil {
			return false, err.Error()
		}
		st = decodeStatuses(e.t, out)[key]
		if st == nil {
			return false, fmt.Sprintf("%s not in %s", key, out)
		}
		return int(st.num("applied_events")) == e.bank.Total() && st.num("lag_events") == 0,
			fmt.Sprintf("%s applied %v of %d, lag %v", key, st["applied_events"], e.bank.Total(), st["lag_events"])
	})
	return st
}

func TestCommandsAgainstServe(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(1500)
	e.serveInProcess()

	// status -o json: the contract's fields, and every event applied once caught up.
	v1 := e.waitCaughtUp("balances_v1")
	for _, f := range []string{"key", "projection", "state", "live", "applied_events", "progress", "eta_seconds", "lag_events", "lag_seconds", "error"} {
		require.Contains(t, v1, f, "status -o json field %q", f)
	}
	require.Equal(t, "balances", v1.str("projection"))
	require.Equal(t, "live", v1.str("state"))
	require.Equal(t, true, v1["live"])
	require.EqualValues(t, 1, v1.num("progress"))
	require.EqualValues(t, 1500, v1.num("applied_events"))
	require.Equal(t, e.bank.Balances(), e.liveBalances(), "the live view holds the balances the events imply")

	out := e.mustCLI("status")
	require.Regexp(t, `(?m)^balances_v1\s+balances\s+live\s+yes\s+1,500\s+-\s+-\s+0\s`, out)
	out = e.mustCLI("status", "balances_v1")
	require.Regexp(t, `(?m)^state:\s+live$`, out)
	require.Regexp(t, `(?m)^bank\.accounts\s+0\s`, out, "the partitions table")
	out = e.mustCLI("status", "balances_v1", "-o", "json")
	var one statusJSON
	require.NoError(t, json.Unmarshal([]byte(out), &one), "status KEY -o json is one object: %s", out)
	require.Equal(t, "balances_v1", one.str("key"))

	out = e.mustCLI("lag", "balances_v1", "-o", "json")
	var lag statusJSON
	require.NoError(t, json.Unmarshal([]byte(out), &lag))
	require.EqualValues(t, 0, lag.num("lag_events"))
	require.Len(t, lag["partitions"], 4)
	require.Contains(t, e.mustCLI("lag", "balances_v1"), "balances_v1 (live): 0 events behind")

	// A replay: create and start, refused duplicates and unknown keys, watch it catch up.
	out = e.mustCLI("create", "balances_v2", "--projection", "balances", "--start")
	require.Regexp(t, `^created balances_v2 \(projection balances\): (replaying|tailing)\n$`, out)

	_, err := e.cli("create", "balances_v2", "--projection", "balances")
	require.ErrorContains(t, err, "create balances_v2: the key is already used")
	_, err = e.cli("create", "balances_v9", "--projection", "nosuch")
	require.ErrorContains(t, err, `unknown projection "nosuch"`)
	_, err = e.cli("start", "nosuch")
	require.EqualError(t, err, `unknown replay "nosuch"`)
	out, err = e.cli("start", "nosuch", "-o", "json")
	require.EqualError(t, err, `unknown replay "nosuch"`)
	var rejected map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rejected), "a rejected outcome is printed as JSON too: %s", out)
	require.Equal(t, false, rejected["ok"])
	require.Equal(t, `unknown replay "nosuch"`, rejected["error"])
	_, err = e.cli("remove", "balances_v1")
	require.ErrorContains(t, err, "cannot remove balances_v1: it is the live version of balances")
	_, err = e.cli("status", "nosuch")
	require.ErrorContains(t, err, `unknown replay "nosuch"`)

	out = e.mustCLI("status", "balances_v2", "--watch")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Regexp(t, `^\d\d:\d\d:\d\d balances_v2 tailing\s+100\.0%`, lines[len(lines)-1], "not a terminal: plain lines; the last one is tailing")

	require.Equal(t, "paused balances_v2\n", e.mustCLI("pause", "balances_v2"))
	eventually(t, 10*time.Second, func() (bool, string) {
		out, err := e.cli("status", "balances_v2", "-o", "json")
		return err == nil && strings.Contains(out, `"state": "paused"`), out
	})
	_, err = e.cli("pause", "balances_v2")
	require.ErrorContains(t, err, "cannot pause balances_v2: it is paused")
	require.Equal(t, "resumed balances_v2: tailing\n", e.mustCLI("resume", "balances_v2"))

	out, err = e.cli("verify", "balances_v2")
	require.NoError(t, err, out)
	require.Contains(t, out, "PASSED: balances_v2 matches balances_v1")
	require.Regexp(t, `(?m)^check\s+SELECT count\(\*\) FROM balances\s+yes\s`, out)

	// New events reach both versions; promote waits for v2 to have them.
	e.produce(300)
	out = e.mustCLI("promote", "balances_v2", "--wait", "30s")
	require.Regexp(t, `^promoted balances_v2: live \(balances_v1 retired, swap \d+\.\dms, \d+ attempts?`, out)
	e.waitCaughtUp("balances_v2")
	require.Equal(t, e.bank.Balances(), e.liveBalances(), "readers see v2, complete")

	out = e.mustCLI("rollback", "balances", "-o", "json")
	var outcome map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &outcome), out)
	require.Equal(t, true, outcome["ok"])
	require.Equal(t, "rollback", outcome["command"])
	require.Equal(t, "balances_v1", outcome["result"].(map[string]any)["to"])
	require.Equal(t, e.bank.Balances(), e.liveBalances(), "readers see v1 again, which kept tailing")

	out = e.mustCLI("remove", "balances_v2")
	require.Equal(t, "removed balances_v2\n", out)
	eventually(t, 10*time.Second, func() (bool, string) {
		out, err := e.cli("status", "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		_, there := decodeStatuses(t, out)["balances_v2"]
		return !there, out
	})
	_, err = e.cli("rollback", "balances")
	require.ErrorContains(t, err, `projection "balances" has no retired version to roll back to`)
}

// The CLI's side of the reader contract: verify and promote name the columns a promotion
// retypes; promote refuses without --allow-shape-change (exit 1, the columns and the flag in the
// error), goes through with it and prints the change; rollback prints the change back.
func TestPromoteAllowShapeChangeThroughTheCLI(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(500)
	stop := e.serveUntilStopped()
	e.waitCaughtUp("balances_v1")
	stop()
	// The config's balances.total becomes numeric: balances_v2's view would change its type.
	cfg, err := os.ReadFile(e.config)
	require.NoError(t, err)
	require.Contains(t, string(cfg), "total bigint NOT NULL")
	require.NoError(t, os.WriteFile(e.config, []byte(strings.Replace(string(cfg), "total bigint NOT NULL", "total numeric NOT NULL", 1)), 0o600))
	e.serveInProcess()
	e.mustCLI("create", "balances_v2", "--projection", "balances", "--start")
	e.waitCaughtUp("balances_v2")
	const change = "view shape: public.balances: retypes total bigint -> numeric (breaking)\n"

	out, _ := e.cli("verify", "balances_v2")
	require.Contains(t, out, change)
	require.Contains(t, out, "kreplay promote balances_v2 needs --allow-shape-change")

	_, err = e.cli("promote", "balances_v2", "--wait", "30s")
	require.ErrorContains(t, err, "promote balances_v2 would change columns that readers of the live views see (public.balances: retypes total bigint -> numeric)")
	require.ErrorContains(t, err, "pass --allow-shape-change")
	require.Equal(t, e.bank.Balances(), e.liveBalances(), "the refused promotion left v1 live")

	out = e.mustCLI("promote", "balances_v2", "--wait", "30s", "--allow-shape-change")
	require.Regexp(t, `^promoted balances_v2: live \(balances_v1 retired, .*\)\n`+regexp.QuoteMeta(change)+`$`, out)
	db, err := pgx.Connect(context.Background(), e.dbURL)
	require.NoError(t, err)
	defer db.Close(context.Background())
	var typ string
	require.NoError(t, db.QueryRow(context.Background(), "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.balances'::regclass AND attname = 'total'").Scan(&typ))
	require.Equal(t, "numeric", typ)

	out = e.mustCLI("rollback", "balances")
	require.Contains(t, out, "view shape: public.balances: retypes total numeric -> bigint (breaking)\n")
	require.Equal(t, e.bank.Balances(), e.liveBalances())
}

// serveUntilStopped runs `kreplay serve` in process until the returned function stops it (and
// checks that it stopped cleanly).
func (e *env) serveUntilStopped() (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		root := newRootCommand()
		root.SetOut(logs)
		root.SetErr(logs)
		root.SetArgs([]string{"serve", "-c", e.config, "--log-level", "warn", "--shutdown-timeout", "5s"})
		done <- root.ExecuteContext(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(e.t, err, "serve; logs:\n%s", logs.String())
			case <-time.After(30 * time.Second):
				e.t.Fatalf("serve did not stop within 30s of its context's end; logs:\n%s", logs.String())
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}
