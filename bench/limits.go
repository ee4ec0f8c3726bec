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

// limits is the reference the run's own scenarios give for the partition mode, so that its ratio
// can be read against the room a replay has on this machine (docs/PERFORMANCE.md, "What two cores
// allow"). The other references printLimits shows are in the ratios and the scenarios already.
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
}

// summarizeLimits fills r.Limits from the scenarios that ran.
func (r *results) summarizeLimits() {
	byName := map[string]*scenario{}
	for _, sc := range r.Scenarios {
		if !sc.Skipped && sc.Error == "" {
			byName[sc.Name] = sc
		}
	}
	ceiling, consume := byName["ceiling_batch_parallel"], byName["ceiling_consume"]
	if ceiling == nil || consume == nil || ceiling.CPU == nil || consume.CPU == nil || ceiling.CPU.Busy < saturated {
		return
	}
	c := ceiling.CPU.Bench + ceiling.CPU.Postgres
	k := consume.CPU.Bench + consume.CPU.Postgres
	if c > 0 {
		v := math.Round(c/(c+k)*1000) / 1000
		r.Limits = &limits{PartitionReference: &v, CeilingCPU: round2(c), ConsumeCPU: round2(k), CeilingBusy: ceiling.CPU.Busy}
	}
}

// printLimits prints the run's references beside the ratios: the partition reference, ceiling_set /
// ceiling_batch (a fold at its set-based ceiling would be that many times ceiling_batch), and each
// replay's start-up (extra.setup_seconds: the child's start to its version's creation).
func printLimits(w io.Writer, r *results) {
	l, setOverBatch := r.Limits, r.Ratios["ceiling_set / ceiling_batch"]
	var startups []string
	for _, sc := range r.Scenarios {
		if s, ok := sc.Extra["setup_seconds"].(float64); ok && strings.HasPrefix(sc.Name, "kreplay_") && sc.Seconds > 0 {
			startups = append(startups, fmt.Sprintf("%s %.2fs (%.1f%%)", sc.Name, s, 100*s/sc.Seconds))
		}
	}
	if l == nil && setOverBatch == nil && len(startups) == 0 {
		return
	}
	fmt.Fprintln(w, "\nreferences from this run (docs/PERFORMANCE.md, \"What two cores allow\"):")
	if l != nil {
		fmt.Fprintf(w, "  kreplay_partition / ceiling_batch_parallel of a replay that cost only the ceiling's CPU and consuming's: %.3f\n"+
			"    (the ceiling kept the CPUs %.0f%% busy with %.1f CPU-s; reading and decoding every record from the broker on the same CPUs,\n"+
			"    ceiling_consume, took %.1f CPU-s; no checkpoint, queue or group counted)\n",
			*l.PartitionReference, 100*l.CeilingBusy, l.CeilingCPU, l.ConsumeCPU)
	}
	if setOverBatch != nil {
		fmt.Fprintf(w, "  ceiling_set / ceiling_batch = %.3f: a fold at its set-based ceiling would be this many times ceiling_batch\n", *setOverBatch)
	}
	if len(startups) > 0 {
		fmt.Fprintf(w, "  start-up in the timed seconds (the child's start to its version's creation; the ceilings have none):\n    %s\n", strings.Join(startups, ", "))
	}
}
