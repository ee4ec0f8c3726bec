package processor_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
)

// The status gauges are the installation's: with two instances, each version's series is
// exported once (by the leader), so that sum() over the instances' /metrics counts it once; when
// the leader stops, the other instance exports them, still once.
func TestStatusGaugesAreExportedOncePerInstallation(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]int32{bankTopic: 2})
	bank := bankgen.New(bankTopic, 2, 50, 3)
	b.kafka.Produce(bank.Events(300)...)
	cfg := b.config(bankgen.Config(bankTopic, 2, "global", false))
	cfg.HTTP.Listen = "127.0.0.1:0"
	first := b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", bankTopic) }, "balances_v1 did not catch up")
	eventually(t, 20*time.Second, first.p.Leading, "the first instance does not lead")
	second := b.start(cfg)
	instances := []*running{first, second}

	// series sums the samples of a metric whose labels include want over every running
	// instance's /metrics, and counts them.
	series := func(name string, want map[string]string) (n int, sum float64) {
		for _, in := range instances {
			if in.cancel == nil {
				continue // stopped
			}
			for _, s := range scrape(t, "http://"+in.p.HTTPAddr()+"/metrics") {
				if s.Name == name && s.HasLabels(want) {
					n++
					sum += s.Value
				}
			}
		}
		return n, sum
	}
	once := func() (bool, string) {
		live := map[string]string{"projection": "balances", "version": "balances_v1", "state": "live"}
		v1 := map[string]string{"projection": "balances", "version": "balances_v1"}
		n, sum := series("kreplay_replay_state", live)
		lagN, lag := series("kreplay_lag_events", v1)
		progN, prog := series("kreplay_replay_progress", v1)
		ok := n == 1 && sum == 1 && lagN == 1 && lag == 0 && progN == 1 && prog == 1
		for _, g := range []string{"kreplay_lag_seconds", "kreplay_replay_eta_seconds", "kreplay_definition_drift"} {
			gn, gsum := series(g, v1)
			ok = ok && gn == 1 && gsum == 0
		}
		return ok, "the status gauges are not exported once: " + dump(series)
	}
	// Several status rounds of both instances: the follower computes statuses too (for
	// /api/replays), but exports no gauge.
	eventually(t, 20*time.Second, func() bool { return len(second.p.Statuses()) == 1 }, "the second instance computes no status")
	for range 5 {
		testkit.EventuallyWhy(t, 10*time.Second, once)
		time.Sleep(250 * time.Millisecond)
	}
	require.False(t, second.p.Leading())
	n, _ := series("kreplay_replay_state", nil)
	require.Equal(t, 8, n, "one series per state of the one version: %v", dump(series))

	// The leader goes away: the other instance takes the leadership and the gauges over.
	require.NoError(t, first.stop())
	eventually(t, 30*time.Second, second.p.Leading, "the second instance did not take the leadership")
	testkit.EventuallyWhy(t, 20*time.Second, once)
}

// scrape reads the samples of a /metrics page.
func scrape(t *testing.T, url string) []testkit.Sample {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out []testkit.Sample
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := testkit.ParseSample(line)
		require.NoError(t, err)
		out = append(out, s)
	}
	return out
}

// dump describes what the instances export, for failure messages.
func dump(series func(string, map[string]string) (int, float64)) string {
	var b strings.Builder
	for _, name := range []string{"kreplay_replay_state", "kreplay_lag_events", "kreplay_lag_seconds", "kreplay_replay_progress",
		"kreplay_replay_eta_seconds", "kreplay_definition_drift"} {
		n, sum := series(name, map[string]string{"version": "balances_v1"})
		b.WriteString(name + ": " + strconv.Itoa(n) + " series, sum " + strconv.FormatFloat(sum, 'g', -1, 64) + "; ")
	}
	return b.String()
}
