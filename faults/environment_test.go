package faults

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/store/storetest"
)

// An error of the environment is never treated as a bad event: a column renamed away under a
// running version with on_error: skip (whose handlers then fail with SQLSTATE 42703) makes the
// version wait and say why (status error, kreplay_apply_retries_total), without skipping or
// advancing; once the column is back it goes on by itself, and no event is lost.
func TestFaultColumnRenamedAwayLosesNothing(t *testing.T) {
	start := time.Now()
	cfg := strings.Replace(bankgen.Config(topic, 4, "global", false), "    ordering: global\n", "    ordering: global\n    on_error: skip\n", 1)
	e := newEnv(t, 4, cfg)
	e.produce(2000)
	s := e.startServe()
	testkit.Eventually(t, 60*time.Second, func() bool { return e.caughtUp("balances_v1") }, "balances_v1 did not catch up")
	checkpoint := func() int64 {
		return e.scalar("SELECT sum(next_offset) FROM kreplay.checkpoints WHERE version = 'balances_v1'")
	}
	before := checkpoint()

	ctx := context.Background()
	_, err := e.db.Exec(ctx, "ALTER TABLE balances_v1.balances RENAME COLUMN total TO total_renamed")
	require.NoError(t, err)
	renamed := time.Now()
	e.produce(1000)
	testkit.EventuallyWhy(t, 30*time.Second, func() (bool, string) {
		st := statusOf(t, s, "balances_v1")
		return strings.Contains(st.Error, "retrying") && strings.Contains(st.Error, "42703"), "status error: " + st.Error
	})
	require.Positive(t, s.metric("kreplay_apply_retries_total", `cause="sqlstate_42"`), "the retries are counted")
	time.Sleep(max(0, 10*time.Second-time.Since(renamed)))
	require.Equal(t, before, checkpoint(), "the version advanced past events it could not apply")
	require.Zero(t, e.scalar("SELECT sum(skipped_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"), "events skipped as poison")

	_, err = e.db.Exec(ctx, "ALTER TABLE balances_v1.balances RENAME COLUMN total_renamed TO total")
	require.NoError(t, err)
	testkit.Eventually(t, 60*time.Second, func() bool { return e.caughtUp("balances_v1") }, "balances_v1 did not go on once the column was back")
	want, _, total := e.expected()
	require.Equal(t, want, storetest.Int64Map(t, e.db, "SELECT account_id, total FROM public.balances"))
	require.Equal(t, int64(total), e.scalar("SELECT sum(applied_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))
	require.Zero(t, e.scalar("SELECT sum(skipped_events) FROM kreplay.checkpoints WHERE version = 'balances_v1'"))
	testkit.EventuallyWhy(t, 30*time.Second, func() (bool, string) {
		st := statusOf(t, s, "balances_v1")
		return st.Error == "", "status error after recovery: " + st.Error
	})
	record(t, row{Scenario: "8 column renamed away for 10s", Faults: "on_error: skip, handlers failing with 42703 for 10s", Events: int64(total), Exact: true, Took: time.Since(start)})
}

// versionStatus is what the environment tests read of GET /api/replays.
type versionStatus struct {
	Key   string `json:"key"`
	State string `json:"state"`
	Error string `json:"error"`
}

// statusOf is a version's status from a serve's /api/replays.
func statusOf(t *testing.T, s *serve, key string) versionStatus {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.http + "/api/replays")
	if err != nil {
		return versionStatus{}
	}
	defer resp.Body.Close()
	var sts []versionStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&sts))
	for _, st := range sts {
		if st.Key == key {
			return st
		}
	}
	return versionStatus{}
}
