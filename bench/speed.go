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
// host. The probe costs about 0.5% of one CPU. It runs over the whole scenario (setup and checks
// included), not only over its timed part.

const (
	probeEvery = 200 * time.Millisecond
	probeWords = 1 << 20 // 8 MiB: beyond a core's L2, within the shared L3, so that a neighbour's use of the shared cache shows too
	probeSteps = 1 << 16
)

// speedProbe samples the host's speed until stop.
type speedProbe struct {
	done    chan struct{}
	wg      sync.WaitGroup
	samples []probeSample
}

// probeSample is one run of the probe's work: when it ran and the CPU time it took.
type probeSample struct {
	at  time.Time
	cpu time.Duration
}

// probeResult is the median CPU time of the probe's work over a scenario, and over its first
// and last third (of time): a host that slowed down in the middle of a scenario shows there.
type probeResult struct {
	all, first, last time.Duration
}

func startSpeedProbe() *speedProbe {
	p := &speedProbe{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		runtime.LockOSThread() // the thread's CPU clock measures this goroutine only
		defer runtime.UnlockOSThread()
		mem := make([]uint64, probeWords)
		probeWork(mem) // not kept: the first run faults the memory in (and the next one would find it in cache)
		t := time.NewTicker(probeEvery)
		defer t.Stop()
		for {
			select {
			case <-p.done:
				return
			case <-t.C:
			}
			if d, ok := probeWork(mem); ok {
				p.samples = append(p.samples, probeSample{at: time.Now(), cpu: d})
			}
		}
	}()
	return p
}

// stop ends the probe and returns the medians of its runs (zero without runs).
func (p *speedProbe) stop() probeResult {
	close(p.done)
	p.wg.Wait()
	if len(p.samples) == 0 {
		return probeResult{}
	}
	from, to := p.samples[0].at, p.samples[len(p.samples)-1].at
	third := to.Sub(from) / 3
	var all, first, last []time.Duration
	for _, s := range p.samples {
		all = append(all, s.cpu)
		switch {
		case s.at.Before(from.Add(third)):
			first = append(first, s.cpu)
		case !s.at.Before(to.Add(-third)):
			last = append(last, s.cpu)
		}
	}
	return probeResult{all: median(all), first: median(first), last: median(last)}
}

// median is the median of ds, 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

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
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &b) != nil {
		return 0, false
	}
	return time.Duration(b.Nano() - a.Nano()), true
}
