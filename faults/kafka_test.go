package faults

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor/control"
)

// Kafka failing under kreplay, injected with kfake's fault hooks on a three-broker cluster:
// fetches and offset commits answered with errors, the group coordinator unavailable,
// partition leaders moving, a broker going away and coming back, and a rebalance storm (other
// instances joining and leaving every couple of seconds) — while a replay runs and events arrive.
// Nothing is applied twice, nothing stalls: every version ends exactly at the log.
func TestFaultKafka(t *testing.T) {
	start := time.Now()
	e := newEnv(t, 8, bankgen.Config(topic, 8, "global", true)+spreadProjection, kfake.NumBrokers(3))
	e.produce(pick(15000, 60000))
	s := e.startServe()
	c := e.client()
	out := command(c, 30*time.Second, control.Command{Command: "create", Replay: "balances_v2", Projection: "balances", Options: json.RawMessage(`{"start": true}`)})
	require.NotNil(t, out)
	require.True(t, out.OK, out.Error)

	k := e.kafka.Cluster
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	until := time.Now().Add(pick(12*time.Second, 90*time.Second))
	counts := map[string]int{}
	var storm sync.WaitGroup
	stormDone := make(chan struct{})
	var stormMu sync.Mutex
	joined := 0
	srnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	storm.Go(func() { // other instances join and leave
		for {
			select {
			case <-stormDone:
				return
			default:
			}
			extra, err := e.tryServe()
			if err != nil {
				t.Errorf("storm: %v", err)
				return
			}
			time.Sleep(time.Duration(1500+srnd.IntN(1500)) * time.Millisecond)
			if srnd.IntN(2) == 0 {
				extra.kill()
			} else {
				extra.signal(syscall.SIGTERM)
				<-extra.done //nolint:errcheck // stopped on purpose; the storm only checks the others carry on
			}
			stormMu.Lock()
			joined++
			stormMu.Unlock()
		}
	})
	nodes := []int32{0, 1, 2}
	for time.Now().Before(until) {
		e.produce(300)
		switch rnd.IntN(6) {
		case 0:
			k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: 10})
			counts["fetch errors"] += 10
		case 1:
			k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: kerr.UnknownServerError, Count: 5})
			counts["fetch errors"] += 5
		case 2:
			k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.CoordinatorNotAvailable, Count: 10, TopLevel: false})
			counts["offset commit errors"] += 10
		case 3:
			k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.FindCoordinator}, Err: kerr.CoordinatorNotAvailable, Count: 5, TopLevel: true})
			counts["coordinator unavailable"] += 5
		case 4:
			k.ShufflePartitionLeaders()
			counts["leader changes"]++
		case 5:
			// A broker goes away and a replacement joins (kfake cannot bring the same node ID
			// back on its old port without confusing clients).
			i := 1 + rnd.IntN(len(nodes)-1) // node 0 stays: the seed brokers in the config must keep one that answers
			if k.RemoveNode(nodes[i]) == nil {
				time.Sleep(500 * time.Millisecond)
				id, _, err := k.AddNode(-1, 0)
				require.NoError(t, err)
				nodes[i] = id
				counts["broker replaced"]++
			}
		}
		time.Sleep(time.Duration(300+rnd.IntN(500)) * time.Millisecond)
	}
	close(stormDone)
	storm.Wait()
	counts["instance joined and left"] = joined
	exact := e.exact(bankTables)
	s.stop(t)
	_, _, total := e.expected()
	faults := ""
	for _, f := range []string{"fetch errors", "offset commit errors", "coordinator unavailable", "leader changes", "broker replaced", "instance joined and left"} {
		faults += fmt.Sprintf("%d %s, ", counts[f], f)
	}
	record(t, row{Scenario: "3 Kafka faults", Faults: faults[:len(faults)-2], Events: int64(total), Exact: exact, Took: time.Since(start)})
	require.True(t, exact)
}
