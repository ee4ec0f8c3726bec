package faults

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store/storetest"
)

// Confinement, with the real binary: a projection whose new definition has a handler that
// writes the live view is refused by serve at start, naming the handler and the view; one whose
// handler escapes validation (dynamic SQL in a function its own tables statements create, after
// RESET ROLE) replays into a version that fails with PostgreSQL's refusal (SQLSTATE 42501) as
// its reason, and the live rows stay exactly as they were, byte for byte. No role of the catalog
// outlives the test.
func TestFaultConfinement(t *testing.T) {
	start := time.Now()
	var prefix string
	// Registered first, so it runs last: after the database (and its roles) were dropped.
	t.Cleanup(func() {
		if prefix == "" {
			return
		}
		admin := storetest.Conn(t, storetest.ServerURL())
		var left []string
		rows, err := admin.Query(context.Background(), "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", prefix)
		require.NoError(t, err)
		for rows.Next() {
			var r string
			require.NoError(t, rows.Scan(&r))
			left = append(left, r)
		}
		require.Empty(t, left, "roles left behind")
	})

	e := newEnv(t, 4, bankgen.Config(topic, 4, "global", true))
	e.produce(3000)
	s := e.startServe()
	eventually(t, 60*time.Second, func() bool { return e.caughtUp("balances_v1") }, "v1 did not catch up")
	live := func() string {
		return e.strings(`SELECT coalesce(string_agg(b::text, E'\n' ORDER BY b::text), '') FROM public.balances AS b`)[0] + "\n" +
			e.strings(`SELECT string_agg(c::text, E'\n' ORDER BY c::text) FROM (SELECT version, topic, partition, next_offset, applied_events
				FROM kreplay.checkpoints WHERE version = 'balances_v1') AS c`)[0]
	}
	before := live()
	want, _, _ := e.expected()
	require.Equal(t, want, storeMap(t, e, "SELECT account_id, total FROM public.balances"))
	s.stop(t)

	const withdrawn = `INSERT INTO balances AS b (account_id, total, updated_at, events)
        VALUES (@aggregate_id, -(@data->>'amount')::bigint, @created_at, 1)`
	require.Contains(t, e.yaml, withdrawn)

	// A handler naming the live view: refused at start, before anything runs.
	hostile := strings.Replace(e.yaml, withdrawn,
		"WITH x AS (UPDATE public.balances SET total = total * 2 WHERE account_id <> @aggregate_id RETURNING 1)\n        "+withdrawn, 1)
	path := filepath.Join(t.TempDir(), "hostile.yaml")
	require.NoError(t, os.WriteFile(path, []byte(hostile), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "serve", "-c", path).CombinedOutput()
	require.Error(t, err, "serve must refuse the config\n%s", out)
	require.Contains(t, string(out), `config refused by PostgreSQL (no version was started)`)
	require.Contains(t, string(out), `projection "balances": handler "MoneyWithdrawn": uses public.balances, outside the version's schema`)
	require.Equal(t, before, live(), "the refused config changed nothing")

	// A handler that gets past validation: its function's dynamic SQL leaves the role and
	// writes the live view. The replay fails with PostgreSQL's refusal; the live rows stay.
	sneaky := strings.Replace(e.yaml, "    handlers:\n", `      - |
        CREATE FUNCTION settle(account text) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
          RESET ROLE;
          PERFORM set_config('role', 'none', false);
          EXECUTE 'UPDATE public.balances SET total = total * 2 WHERE account_id <> $1' USING account;
        END $$
    handlers:
`, 1)
	sneaky = strings.Replace(sneaky, withdrawn, `WITH s AS (SELECT settle(@aggregate_id))
        INSERT INTO balances AS b (account_id, total, updated_at, events)
        SELECT @aggregate_id, -(@data->>'amount')::bigint, @created_at, 1 FROM s`, 1)
	require.NotEqual(t, e.yaml, sneaky)
	e.yaml = sneaky
	s = e.startServe()
	c := e.client()
	res := command(c, 30*time.Second, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	require.NotNil(t, res)
	require.True(t, res.OK, res.Error)
	eventually(t, 60*time.Second, func() bool {
		return e.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2' AND state = 'failed'") == 1
	}, "balances_v2 did not fail")
	reason := e.strings("SELECT error FROM kreplay.versions WHERE key = 'balances_v2'")[0]
	require.Contains(t, reason, `handler "MoneyWithdrawn": permission denied for view balances`)
	require.Contains(t, reason, "[SQLSTATE 42501]")
	eventually(t, 30*time.Second, func() bool {
		statuses, err := c.Statuses(context.Background())
		if err != nil {
			return false
		}
		for _, st := range statuses {
			if st.Key == "balances_v2" {
				return st.State == "failed" && strings.Contains(st.Error, "permission denied for view balances")
			}
		}
		return false
	}, "balances_v2's status does not say why it failed")
	require.Equal(t, before, live(), "the live rows changed")
	require.Equal(t, want, storeMap(t, e, "SELECT account_id, total FROM public.balances"))

	// Removing the version drops its role; the catalog's other roles go with the database.
	prefix = e.strings("SELECT 'kr_' || id || '_' FROM kreplay.catalog")[0]
	res = command(c, 30*time.Second, control.Command{Command: "remove", Replay: "balances_v2"})
	require.NotNil(t, res)
	require.True(t, res.OK, res.Error)
	require.Equal(t, []string{prefix + "_versions", prefix + "balances_v1"},
		e.strings("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1", prefix))
	s.stop(t)
	record(t, row{Scenario: "7 confinement", Faults: "a handler naming the live view; dynamic SQL after RESET ROLE",
		Events: 3000, Exact: before == live(), Took: time.Since(start)})
}

// storeMap reads (text, bigint) rows as a map.
func storeMap(t *testing.T, e *env, sql string) map[string]int64 {
	t.Helper()
	return storetest.Int64Map(t, e.db, sql)
}
