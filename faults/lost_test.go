package faults

import (
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/store/storetest"
)

// A broker that loses its records under a running serve (here replaced by an empty one on the
// same address: the topics recreated, their offsets back at 0) is seen within seconds: the
// version fails with the reason and the offsets instead of showing lag 0 above records that no
// longer exist; the log stays small (franz-go's retries are not logged one by one); and SIGTERM
// stops serve within its shutdown timeout.
func TestFaultBrokerLosesRecords(t *testing.T) {
	start := time.Now()
	e := newEnv(t, 4, bankgen.Config(topic, 4, "global", false))
	e.produce(5000)
	s := e.startServe()
	testkit.Eventually(t, 60*time.Second, func() bool { return e.caughtUp("balances_v1") }, "balances_v1 did not catch up")
	balances := func() map[string]int64 {
		return storetest.Int64Map(t, e.db, "SELECT account_id, total FROM public.balances")
	}
	before := balances()

	_, port, err := net.SplitHostPort(e.kafka.Addrs[0])
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	e.kafka.Close()
	var replacement *kfake.Cluster
	testkit.Eventually(t, 10*time.Second, func() bool { // the old listener may take a moment to let go of the port
		replacement, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.SeedTopics(4, topic),
			kfake.SeedTopics(1, "kreplay.control", "kreplay.status", "kreplay.dead_letter"))
		return err == nil
	}, "no replacement broker on port %d: %v", p, err)
	t.Cleanup(replacement.Close)

	testkit.EventuallyWhy(t, 60*time.Second, func() (bool, string) {
		state := e.strings("SELECT state FROM kreplay.versions WHERE key = 'balances_v1'")[0]
		return state == "failed", "balances_v1 is " + state
	})
	reason := e.strings("SELECT error FROM kreplay.versions WHERE key = 'balances_v1'")[0]
	require.Regexp(t, `created again|now ends at offset 0, before this version's checkpoint`, reason)
	require.Equal(t, before, balances(), "the live rows are untouched")

	time.Sleep(5 * time.Second) // the log of a serve that keeps retrying against the new broker
	info, err := os.Stat(s.log)
	require.NoError(t, err)
	require.Less(t, info.Size(), int64(2<<20), "serve's log grew to %d bytes in %s", info.Size(), time.Since(start).Round(time.Second))

	s.signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
		require.NoError(t, err, "serve did not exit cleanly on SIGTERM\n%s", tail(s.log))
	case <-time.After(30 * time.Second): // its shutdown timeout is 15s
		t.Fatalf("serve did not stop within 30s of SIGTERM\n%s", tail(s.log))
	}
	record(t, row{Scenario: "7 broker loses its records", Faults: "broker replaced by an empty one under serve", Events: 5000, Exact: true, Took: time.Since(start)})
}
