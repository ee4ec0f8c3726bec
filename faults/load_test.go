package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
)

// Load: a large history, 8 readers querying the live views in a tight loop, a replay of it
// running and then promoted. No reader sees an error, the serve's memory stays bounded (its peak
// RSS is reported; the queues are bounded, so it does not grow with the backlog), and the values
// are exact.
func TestFaultLoad(t *testing.T) {
	start := time.Now()
	events := pick(100000, 1000000)
	e := newEnv(t, 8, bankgen.Config(topic, 8, "global", true))
	for left := events; left > 0; left -= 50000 {
		e.produce(min(left, 50000))
	}
	s := e.startServe()
	eventually(t, 10*time.Minute, func() bool { return e.caughtUp("balances_v1") }, "v1 did not catch up")

	var reads, errs atomic.Int64
	var firstErr atomic.Value
	var latMu sync.Mutex
	var lat []time.Duration
	rctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		conn, err := pgx.Connect(context.Background(), e.dbURL)
		require.NoError(t, err)
		wg.Go(func() {
			defer conn.Close(context.Background())
			var local []time.Duration
			for rctx.Err() == nil {
				t0 := time.Now()
				var n, sum int64
				err := conn.QueryRow(rctx, "SELECT count(*), coalesce(sum(total), 0) FROM public.balances").Scan(&n, &sum)
				if rctx.Err() != nil {
					break
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				reads.Add(1)
				local = append(local, time.Since(t0))
			}
			latMu.Lock()
			lat = append(lat, local...)
			latMu.Unlock()
		})
	}
	c := e.client()
	replayStart := time.Now()
	out := command(c, 30*time.Second, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)
	var peak int64
	eventually(t, 10*time.Minute, func() bool {
		peak = max(peak, vmHWM(s.cmd.Process.Pid))
		return e.scalar("SELECT count(*) FROM kreplay.versions WHERE key = 'balances_v2' AND state = 'tailing'") == 1
	}, "v2 did not reach tailing")
	replay := time.Since(replayStart)
	e.produce(2000)
	out = command(c, 60*time.Second, control.Command{Command: "promote", Replay: "balances_v2", Options: json.RawMessage(`{"wait": "30s"}`)})
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	peak = max(peak, vmHWM(s.cmd.Process.Pid))
	exact := e.exact(bankTables)
	s.stop(t)
	slices.Sort(lat)
	p99 := time.Duration(0)
	if len(lat) > 0 {
		p99 = lat[len(lat)*99/100]
	}
	rate := float64(events) / replay.Seconds()
	_, _, total := e.expected()
	record(t, row{Scenario: "8 load", Faults: fmt.Sprintf("8 readers: %d reads, %d errors, p99 %s; replay %.0f ev/s; serve peak RSS %d MiB",
		reads.Load(), errs.Load(), p99.Round(10*time.Microsecond), rate, peak>>20), Events: int64(total), Exact: exact && errs.Load() == 0, Took: time.Since(start)})
	require.Zero(t, errs.Load(), "reader errors: %v", firstErr.Load())
	require.True(t, exact)
	require.Less(t, peak, int64(300<<20), "serve's peak RSS above 300 MiB")
}

// vmHWM is a process's peak resident set size in bytes (0 when unknown).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
