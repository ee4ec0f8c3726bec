package main

import (
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The host's speed. On a shared machine the same work can take tens of percent more CPU time
// from one minute to the next (another tenant on the core's sibling thread, frequency
// scaling), and nothing in /proc shows it: neither steal nor another process's CPU time. A
// ratio of two scenarios run at different speeds measures the host, not kreplay. So while each
// scenario runs, a probe times a fixed piece of work every probeEvery in the CPU time of its own
// thread (time it waited for a CPU does not count): the same work taking longer means a slower
// host. The probe costs about 0.5% of one CPU.

const (
	probeEvery = 200 * time.Millisecond
	probeWords = 1 << 15 // 256 KiB: the probe walks memory in cache, not only registers
	probeSteps = 1 << 18
)

// speedProbe samples the host's speed until stop.
type speedProbe struct {
	done    chan struct{}
	wg      sync.WaitGroup
	samples []time.Duration // the CPU time of each run of the work
}

func startSpeedProbe() *speedProbe {
	p := &speedProbe{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		runtime.LockOSThread() // the thread's CPU clock measures this goroutine only
		defer runtime.UnlockOSThread()
		mem := make([]uint64, probeWords)
		t := time.NewTicker(probeEvery)
		defer t.Stop()
		for {
			if d, ok := probeWork(mem); ok {
				p.samples = append(p.samples, d)
			}
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// stop ends the probe and returns the median CPU time of its runs, 0 if it had none.
func (p *speedProbe) stop() time.Duration {
	close(p.done)
	p.wg.Wait()
	if len(p.samples) == 0 {
		return 0
	}
	slices.Sort(p.samples)
	return p.samples[len(p.samples)/2]
}

// sink keeps the compiler from removing the probe's work.
var sink uint64

// probeWork runs the fixed work and returns the CPU time it took on this thread.
func probeWork(mem []uint64) (time.Duration, bool) {
	var a, b unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &a) != nil {
		return 0, false
	}
	x := uint64(88172645463325252)
	mask := uint64(len(mem) - 1)
	for range probeSteps {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		mem[x&mask] += x
	}
	sink += x
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &b) != nil {
		return 0, false
	}
	return time.Duration(b.Nano() - a.Nano()), true
}
