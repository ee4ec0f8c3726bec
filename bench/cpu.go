package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuUse is where the CPU time of a timed window went, in seconds: on a shared machine, Other
// shows how much of it served someone else (other users, and PostgreSQL's background processes
// and the kernel, which serve everyone).
type cpuUse struct {
	Machine  float64 `json:"machine"`           // busy time of all the machine's CPUs
	Busy     float64 `json:"machine_busy"`      // Machine / (window × CPUs)
	Bench    float64 `json:"bench_process"`     // this process: kfake, the baselines' clients
	Child    float64 `json:"kreplay_child"`     // the kreplay child process
	Postgres float64 `json:"postgres_backends"` // the backends of the scenario's database
	Other    float64 `json:"other"`             // the rest
}

func (u *cpuUse) add(v cpuUse) {
	u.Machine += v.Machine
	u.Bench += v.Bench
	u.Child += v.Child
	u.Postgres += v.Postgres
}

// finish rounds the figures and derives Other and Busy.
func (u *cpuUse) finish(total cpuTimes) {
	u.Other = max(0, u.Machine-u.Bench-u.Child-u.Postgres)
	if total.total > 0 {
		u.Busy = round2(float64(total.busy) / float64(total.total))
	}
	for _, f := range []*float64{&u.Machine, &u.Bench, &u.Child, &u.Postgres, &u.Other} {
		*f = round2(*f)
	}
}

// cpuWindow is the start of a timed window.
type cpuWindow struct {
	machine cpuTimes
	self    time.Duration
	procs   map[int]time.Duration
}

// startCPU opens a window; the CPU time of pids counts from now, that of processes named only
// at the end counts whole.
func startCPU(pids ...int) cpuWindow {
	w := cpuWindow{machine: machineCPU(), self: selfCPU(), procs: map[int]time.Duration{}}
	for _, p := range pids {
		w.procs[p] = procCPU(p)
	}
	return w
}

// end closes the window: child and postgres are the pids of the kreplay child and of the
// PostgreSQL backends serving the scenario.
func (w cpuWindow) end(child int, postgres []int) (cpuUse, cpuTimes) {
	m := machineCPU()
	since := func(pid int) float64 { return (procCPU(pid) - w.procs[pid]).Seconds() }
	u := cpuUse{
		Machine: (time.Duration(m.busy-w.machine.busy) * clockTick).Seconds(),
		Bench:   (selfCPU() - w.self).Seconds(),
	}
	if child > 0 {
		u.Child = since(child)
	}
	for _, p := range postgres {
		u.Postgres += since(p)
	}
	return u, cpuTimes{busy: m.busy - w.machine.busy, total: m.total - w.machine.total}
}

// cpuTimes is the machine's CPU time from /proc/stat, in clock ticks.
type cpuTimes struct{ busy, total int64 }

func (t *cpuTimes) add(v cpuTimes) { t.busy, t.total = t.busy+v.busy, t.total+v.total }

func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, v := range f[1:] {
		if i >= 8 { // guest and guest_nice are already counted in user and nice
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		t.total += n
		if i != 3 && i != 4 { // idle, iowait
			t.busy += n
		}
	}
	return t
}

// procCPU is the CPU time (user and system) a process has used, 0 if it is gone.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); utime and stime are fields 14 and 15
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick
}

// selfCPU is the CPU time (user and system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
