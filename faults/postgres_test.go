package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store/storetest"
)

// PostgreSQL failing under kreplay: its backends (appliers, pool, leader, listener) terminated
// with pg_terminate_backend in the middle of batches, again and again, while a replay runs and
// events arrive. Consumption pauses and resumes from the checkpoints with nothing lost or
// applied twice. The soak also stops the PostgreSQL server for a few seconds: /readyz answers
// 503 meanwhile, and 200 once it is back.
func TestFaultPostgres(t *testing.T) {
	start := time.Now()
	e := newEnv(t, 8, bankgen.Config(topic, 8, "global", true)+spreadProjection)
	e.produce(pick(20000, 80000))
	s := e.startServe()
	c := e.client()
	out := command(c, 30*time.Second, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)

	db := dbName(e.dbURL)
	terminations := 0
	rounds := pick(15, 60)
	for range rounds {
		e.produce(500)
		var n int64
		err := e.db.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = $1 AND application_name LIKE 'kreplay%' AND pid <> pg_backend_pid()`, db).Scan(&n)
		require.NoError(t, err)
		terminations += int(n)
		time.Sleep(200 * time.Millisecond)
	}
	faults := fmt.Sprintf("%d backends terminated in %d rounds", terminations, rounds)

	if soak() {
		// Stop the whole server (it is local: make soak owns this machine's PostgreSQL).
		e.produce(2000)
		cluster := localCluster(t)
		require.NoError(t, exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], "stop", "-m", "fast").Run())
		stopped := time.Now()
		sawNotReady := false
		for time.Since(stopped) < 5*time.Second {
			if s.get("/readyz") == 503 {
				sawNotReady = true
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.NoError(t, exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], "start").Run())
		require.True(t, sawNotReady, "/readyz never answered 503 while PostgreSQL was down")
		eventually(t, 60*time.Second, func() bool { return s.get("/readyz") == 200 }, "/readyz did not recover after PostgreSQL came back")
		faults += "; server stopped 5s (/readyz 503, then 200)"
	}
	e.produce(1000)
	exact := e.exact(bankTables)
	s.stop(t)
	_, _, total := e.expected()
	record(t, row{Scenario: "2 PostgreSQL faults", Faults: faults, Events: int64(total), Exact: exact, Took: time.Since(start)})
	require.True(t, exact)
	require.Positive(t, terminations)
}

func dbName(url string) string {
	i := strings.LastIndex(url, "/")
	name := url[i+1:]
	if j := strings.Index(name, "?"); j >= 0 {
		name = name[:j]
	}
	return name
}

// localCluster is the Debian cluster (version, name) of the test server.
func localCluster(t *testing.T) [2]string {
	t.Helper()
	out, err := exec.Command("pg_lsclusters", "-h").Output()
	require.NoError(t, err, "make soak stops and starts the local PostgreSQL with pg_ctlcluster")
	f := strings.Fields(string(out))
	require.GreaterOrEqual(t, len(f), 2)
	_ = storetest.ServerURL
	return [2]string{f[0], f[1]}
}
