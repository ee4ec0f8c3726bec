package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// saturated is the machine busy share from which a scenario counts as bound by the machine's
// CPUs: its wall time is then its CPU time over the cores.
const saturated = 0.9

// limits are what the run's own scenarios say about the room a replay has on this machine, so
// that a ratio short of its target can be read against it (docs/PERFORMANCE.md, "What two cores
// allow").
type limits struct {
	// PartitionReference is the kreplay_partition / ceiling_batch_parallel of a replay that
	// cost the ceiling's CPU plus what a replay adds at the least: reading every record from
	// the broker, which shares the CPUs here, and decoding it (ceiling_consume's CPU), and
	// nothing else (no checkpoint, no merge queue, no group). Set when ceiling_batch_parallel
	// kept the CPUs busy (>= saturated): a time is then CPU time over the CPUs, and that
	// replay's ratio is C / (C + K). It is a reference, not a proven bound: a replay could
	// encode its statements with less CPU than the ceiling's pgx.Batch does.
	PartitionReference *float64 `json:"partition_reference,omitempty"`
	CeilingCPU         float64  `json:"partition_reference_ceiling_cpu_seconds,omitempty"` // C: ceiling_batch_parallel's bench and PostgreSQL CPU
	ConsumeCPU         float64  `json:"partition_reference_consume_cpu_seconds,omitempty"` // K: ceiling_consume's CPU (kfake serving, franz-go, the decoder)
	CeilingBusy        float64  `json:"partition_reference_ceiling_busy,omitempty"`
	// SetOverBatch is ceiling_set / ceiling_batch: a fold that ran at its set-based ceiling
	// would be this many times ceiling_batch.
	SetOverBatch *float64 `json:"ceiling_set_over_ceiling_batch,omitempty"`
	// StartupSeconds is each kreplay replay's start-up, in its timed seconds: from the child's
	// start to its version's creation (catalog migrations, the installation check, validating
	// and bootstrapping the projection). The ceilings have none.
	StartupSeconds map[string]float64 `json:"startup_seconds,omitempty"`
}

// summarizeLimits fills r.Limits from the scenarios that ran.
func (r *results) summarizeLimits() {
	l := &limits{StartupSeconds: map[string]float64{}}
	byName := map[string]*scenario{}
	for _, sc := range r.Scenarios {
		if sc.Skipped || sc.Error != "" {
			continue
		}
		byName[sc.Name] = sc
		if s, ok := sc.Extra["setup_seconds"].(float64); ok && strings.HasPrefix(sc.Name, "kreplay_") {
			l.StartupSeconds[sc.Name] = s
		}
	}
	ceiling, consume := byName["ceiling_batch_parallel"], byName["ceiling_consume"]
	if ceiling != nil && consume != nil && ceiling.CPU != nil && consume.CPU != nil && ceiling.CPU.Busy >= saturated {
		c := ceiling.CPU.Bench + ceiling.CPU.Postgres
		k := consume.CPU.Bench + consume.CPU.Postgres
		if c > 0 {
			v := math.Round(c/(c+k)*1000) / 1000
			l.PartitionReference, l.CeilingCPU, l.ConsumeCPU, l.CeilingBusy = &v, round2(c), round2(k), ceiling.CPU.Busy
		}
	}
	l.SetOverBatch = r.Ratios["ceiling_set / ceiling_batch"]
	if l.PartitionReference == nil && l.SetOverBatch == nil && len(l.StartupSeconds) == 0 {
		return
	}
	r.Limits = l
}

// printLimits prints the run's references beside the ratios.
func printLimits(w io.Writer, r *results) {
	l := r.Limits
	if l == nil {
		return
	}
	fmt.Fprintln(w, "\nreferences from this run (docs/PERFORMANCE.md, \"What two cores allow\"):")
	if l.PartitionReference != nil {
		fmt.Fprintf(w, "  kreplay_partition / ceiling_batch_parallel of a replay that cost only the ceiling's CPU and consuming's: %.3f\n"+
			"    (the ceiling kept the CPUs %.0f%% busy with %.1f CPU-s; reading and decoding every record from the broker on the same CPUs,\n"+
			"    ceiling_consume, took %.1f CPU-s; no checkpoint, queue or group counted)\n",
			*l.PartitionReference, 100*l.CeilingBusy, l.CeilingCPU, l.ConsumeCPU)
	}
	if l.SetOverBatch != nil {
		fmt.Fprintf(w, "  ceiling_set / ceiling_batch = %.3f: a fold at its set-based ceiling would be this many times ceiling_batch\n", *l.SetOverBatch)
	}
	if len(l.StartupSeconds) > 0 {
		var parts []string
		for _, sc := range r.Scenarios {
			if s, ok := l.StartupSeconds[sc.Name]; ok && sc.Seconds > 0 {
				parts = append(parts, fmt.Sprintf("%s %.2fs (%.1f%%)", sc.Name, s, 100*s/sc.Seconds))
			}
		}
		fmt.Fprintf(w, "  start-up in the timed seconds (the child's start to its version's creation; the ceilings have none):\n    %s\n", strings.Join(parts, ", "))
	}
}
