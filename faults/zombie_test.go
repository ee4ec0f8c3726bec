package faults

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/stretchr/testify/require"
)

// A member frozen (SIGSTOP) past its session timeout loses its partitions to another instance,
// which claims them in PostgreSQL for a newer group generation. When the frozen member wakes up
// with batches it had prepared, their transactions are refused (fenced) and it writes nothing:
// the values stay exact, with no event applied twice.
func TestFaultZombie(t *testing.T) {
	start := time.Now()
	e := newEnv(t, 8, bankgen.Config(topic, 8, "global", true))
	e.produce(5000)
	a, b := e.startServe(), e.startServe()
	eventually(t, 60*time.Second, func() bool { return e.caughtUp("balances_v1") }, "v1 did not catch up")
	var owner, other *serve
	findOwner := func() {
		eventually(t, 30*time.Second, func() bool {
			va, _ := a.assignments()
			vb, _ := b.assignments()
			switch {
			case va["balances_v1"] == 8 && vb["balances_v1"] == 0:
				owner, other = a, b
				return true
			case vb["balances_v1"] == 8 && va["balances_v1"] == 0:
				owner, other = b, a
				return true
			}
			return false
		}, "no single instance owns balances_v1")
	}

	rounds := pick(2, 8)
	fenced := 0.0
	for range rounds {
		findOwner()
		// Freeze the owner while events arrive: it fetches some, then stops mid-way.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 20 {
				e.produce(200)
				time.Sleep(25 * time.Millisecond)
			}
		}()
		time.Sleep(100 * time.Millisecond)
		owner.signal(syscall.SIGSTOP)
		<-done
		eventually(t, 30*time.Second, func() bool {
			v, _ := other.assignments()
			return v["balances_v1"] == 8 && e.caughtUp("balances_v1")
		}, "the other instance did not take over")
		e.produce(500)
		owner.signal(syscall.SIGCONT)
		eventually(t, 30*time.Second, func() bool { return e.caughtUp("balances_v1") }, "did not catch up after the zombie woke")
		time.Sleep(2 * time.Second)
	}
	for _, s := range []*serve{a, b} {
		fenced += max(0, s.metric("kreplay_fenced_batches_total", `version="balances_v1"`))
	}
	exact := e.exact(bankTables)
	a.stop(t)
	b.stop(t)
	_, _, total := e.expected()
	record(t, row{Scenario: "4 zombie member fenced", Faults: fmt.Sprintf("%d freezes past the session timeout; %.0f batches fenced", rounds, fenced),
		Events: int64(total), Exact: exact, Took: time.Since(start)})
	require.True(t, exact)
}
