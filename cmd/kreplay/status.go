package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/topology"
)

// status and lag read the versions' latest statuses from the status topic (Kafka only; the
// leading serve publishes them every control.status_interval when they change, and every 30s
// regardless).

const defaultStatusTimeout = 10 * time.Second

// statusRepublish is how often serve republishes a status that did not change (processor's
// statusRefresh). A healthy serve's newest status is at most this plus a status interval or
// two old; anything older means no serve is publishing.
const statusRepublish = 30 * time.Second

// staleAfter is the age of the newest status beyond which the CLI says no serve is publishing.
func staleAfter(cfg *topology.Config) time.Duration {
	return statusRepublish + 2*cfg.Control.StatusInterval
}

// barWidth is the width of the --watch progress bar, in cells.
const barWidth = 20

func (a *app) statusCommand() *cobra.Command {
	var (
		watch   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [KEY]",
		Short: "Show the versions' state, progress, ETA and lag",
		Long: `Show every version's state, progress, ETA and lag, or one version's in detail
with its partitions. With --watch, refresh every second: with KEY, a progress
bar until the version is no longer replaying (exit 0 when it is tailing, live or
retired, 1 when it failed); without KEY, until interrupted.`,
		Example: `  kreplay status
  kreplay status balances_v2 --watch
  kreplay status -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch len(args) {
			case 0:
				return nil
			case 1:
				return topology.ValidateKey(args[0])
			}
			return fmt.Errorf("too many arguments (%s): status takes at most one KEY", strings.Join(args[1:], " "))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			key := ""
			if len(args) == 1 {
				key = args[0]
			}
			cl, cfg, err := a.client(cmd)
			if err != nil {
				return err
			}
			defer cl.Close()
			if watch {
				return a.watch(cmd, cl, cfg, key, timeout)
			}
			sts, err := fetchStatuses(cmd.Context(), cl, cfg, timeout)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if key == "" {
				if a.json() {
					err = writeJSON(w, sts)
				} else {
					err = writeStatusTable(w, sts)
				}
			} else {
				st := findStatus(sts, key)
				if st == nil {
					return unknownStatus(key, sts, cfg)
				}
				if a.json() {
					err = writeJSON(w, st)
				} else {
					err = writeStatusDetail(w, *st, time.Now())
				}
			}
			if err != nil {
				return err
			}
			warnStale(cmd.ErrOrStderr(), sts, time.Now(), staleAfter(cfg))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh every second")
	addTimeout(cmd, &timeout, defaultStatusTimeout, "how long to wait for a first status")
	return cmd
}

func (a *app) lagCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "lag KEY",
		Short: "Show how far a version is behind: events and seconds, per partition",
		Args:  keyArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: must be positive", timeout)
			}
			cl, cfg, err := a.client(cmd)
			if err != nil {
				return err
			}
			defer cl.Close()
			sts, err := fetchStatuses(cmd.Context(), cl, cfg, timeout)
			if err != nil {
				return err
			}
			st := findStatus(sts, args[0])
			if st == nil {
				return unknownStatus(args[0], sts, cfg)
			}
			if a.json() {
				err = writeJSON(cmd.OutOrStdout(), lagOf(*st))
			} else {
				err = writeLag(cmd.OutOrStdout(), *st)
			}
			if err != nil {
				return err
			}
			warnStale(cmd.ErrOrStderr(), sts, time.Now(), staleAfter(cfg))
			return nil
		},
	}
	addTimeout(cmd, &timeout, defaultStatusTimeout, "how long to wait for a first status")
	return cmd
}

// fetchStatuses reads the latest statuses, waiting up to timeout for a first one.
func fetchStatuses(ctx context.Context, cl *control.Client, cfg *topology.Config, timeout time.Duration) ([]control.Status, error) {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sts, err := cl.Statuses(sctx)
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("interrupted while reading %s", cfg.Kafka.StatusTopic)
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		// Kafka too slow, or (control.Client.Statuses) the wait for a first status ran out
		// during a request rather than between two.
		return nil, fmt.Errorf("%w (%w)", noStatusError(cfg, timeout), err)
	case err != nil:
		return nil, err
	case len(sts) == 0:
		return nil, noStatusError(cfg, timeout)
	}
	return sts, nil
}

func noStatusError(cfg *topology.Config, timeout time.Duration) error {
	return fmt.Errorf("no status on %s within %s: is kreplay serve running against %s?",
		cfg.Kafka.StatusTopic, timeout, strings.Join(cfg.Kafka.Brokers, ","))
}

func findStatus(sts []control.Status, key string) *control.Status {
	for i := range sts {
		if sts[i].Key == key {
			return &sts[i]
		}
	}
	return nil
}

func unknownStatus(key string, sts []control.Status, cfg *topology.Config) error {
	keys := make([]string, len(sts))
	for i, st := range sts {
		keys[i] = st.Key
	}
	return fmt.Errorf("unknown replay %q: %s has no status for it (versions: %s)", key, cfg.Kafka.StatusTopic, listOrNone(keys))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// statusAge is how old the newest status is.
func statusAge(sts []control.Status, now time.Time) time.Duration {
	var newest time.Time
	for _, st := range sts {
		if st.UpdatedAt.After(newest) {
			newest = st.UpdatedAt
		}
	}
	if newest.IsZero() {
		return 0
	}
	return now.Sub(newest)
}

// staleNote is the warning for statuses older than after, "" when they are fresh.
func staleNote(sts []control.Status, now time.Time, after time.Duration) string {
	age := statusAge(sts, now)
	if age <= after {
		return ""
	}
	return fmt.Sprintf("warning: no kreplay serve has published status for %s; these figures may be out of date (is serve running?)", formatDuration(age))
}

func warnStale(w io.Writer, sts []control.Status, now time.Time, after time.Duration) {
	if note := staleNote(sts, now, after); note != "" {
		fmt.Fprintln(w, note)
	}
}

// replayOngoing says whether a version's progress and ETA mean something: they measure a replay
// against the high watermarks of its start, so once it reached them (tailing, live...) 100%
// would sit beside any lag. Those show "-"; lag says how far behind they are.
func replayOngoing(st control.Status) bool {
	return st.State == "created" || st.State == "replaying" || (st.Progress < 1 && (st.State == "paused" || st.State == "failed"))
}

// writeStatusTable is `kreplay status`: one row per version.
func writeStatusTable(w io.Writer, sts []control.Status) error {
	t := newTable(w, "KEY", "PROJECTION", "STATE", "LIVE", "APPLIED", "PROGRESS", "ETA", "LAG", "LAG(s)", "ERROR")
	drift := false
	for _, st := range sts {
		key := st.Key
		if st.Drift {
			key += "*"
			drift = true
		}
		progress, eta := "-", "-"
		if replayOngoing(st) {
			progress, eta = formatPercent(st.Progress), formatETA(st.ETASeconds)
		}
		t.row(key, st.Projection, st.State, yesNo(st.Live), formatCount(st.AppliedEvents), progress,
			eta, formatCount(st.LagEvents), formatLagSeconds(st.LagSeconds), orDash(truncate(st.Error, 60)))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if drift {
		_, err := fmt.Fprintln(w, "* the projection's definition in serve's config differs from this version's snapshot (drift)"+driftAdvice(sts))
		return err
	}
	return nil
}

// driftAdvice says what to do about drift: roll the config's definition out when a live version
// drifts and no version runs it, promote the one that runs it when one does; a retired or
// replaying version that drifts while the live one matches the config needs nothing.
func driftAdvice(sts []control.Status) string {
	matches := map[string]bool{} // projection -> a version (not removed) runs the config's definition
	for _, st := range sts {
		if !st.Drift && st.State != "removed" {
			matches[st.Projection] = true
		}
	}
	advice := ""
	for _, st := range sts {
		if !st.Live || !st.Drift {
			continue
		}
		if !matches[st.Projection] {
			return "; roll it out with kreplay create"
		}
		advice = "; promote the version that runs the config's definition"
	}
	return advice
}

// writeStatusDetail is `kreplay status KEY`.
func writeStatusDetail(w io.Writer, st control.Status, now time.Time) error {
	t := newTable(w, "key:", st.Key)
	t.row("projection:", st.Projection)
	t.row("state:", st.State)
	live := yesNo(st.Live)
	if !st.Live {
		live += " (live version: " + orDash(st.LiveVersion) + ")"
	} else if st.PreviousVersion != "" {
		live += " (previous: " + st.PreviousVersion + ", for rollback)"
	}
	t.row("live:", live)
	t.row("applied:", formatCount(st.AppliedEvents)+" events ("+formatCount(st.SkippedEvents)+" skipped, "+formatCount(st.LateEvents)+" late)")
	if replayOngoing(st) {
		t.row("progress:", formatPercent(st.Progress)+" of the start watermarks")
	} else {
		t.row("progress:", "- (the replay reached its start watermarks; lag says how far behind it is now)")
	}
	t.row("rate:", formatRate(st.Rate))
	t.row("eta:", formatETA(st.ETASeconds))
	t.row("lag:", formatCount(st.LagEvents)+" events, "+formatSeconds(st.LagSeconds))
	def := orDash(st.DefinitionHash)
	if st.Drift {
		def += " (drift: serve's config defines the projection differently"
		if st.Live {
			def += "; roll it out with kreplay create"
		}
		def += ")"
	}
	t.row("definition:", def)
	t.row("options:", formatOptions(st))
	if !st.CreatedAt.IsZero() {
		t.row("created:", st.CreatedAt.UTC().Format(time.RFC3339))
	}
	if !st.UpdatedAt.IsZero() {
		t.row("updated:", st.UpdatedAt.UTC().Format(time.RFC3339)+" ("+formatDuration(now.Sub(st.UpdatedAt))+" ago)")
	}
	if st.Error != "" {
		t.row("error:", st.Error)
	}
	if st.AutoPromoteHeld != "" {
		t.row("auto-promote:", "held: "+st.AutoPromoteHeld)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(st.Partitions) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return writePartitions(w, st.Partitions, true)
}

func formatOptions(st control.Status) string {
	o := st.Options
	var parts []string
	if len(o.Topics) > 0 {
		parts = append(parts, "topics "+strings.Join(o.Topics, ", "))
	}
	if o.Since != nil {
		parts = append(parts, "since "+o.Since.UTC().Format(time.RFC3339Nano))
	}
	if len(o.EventTypes) > 0 {
		parts = append(parts, "event types "+strings.Join(o.EventTypes, ", "))
	}
	if o.AutoPromote {
		parts = append(parts, "auto-promote")
	}
	if o.AllowTruncatedHistory {
		parts = append(parts, "allow truncated history")
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func writePartitions(w io.Writer, ps []control.PartitionStatus, target bool) error {
	// LAG is LAST STABLE minus NEXT OFFSET: kreplay reads committed, so a transaction open on
	// the partition (HIGH WATERMARK past LAST STABLE) is not lag.
	header := []string{"TOPIC", "PARTITION", "NEXT OFFSET", "LAST STABLE", "HIGH WATERMARK", "LAG"}
	if target {
		header = []string{"TOPIC", "PARTITION", "NEXT OFFSET", "TARGET", "LAST STABLE", "HIGH WATERMARK", "LAG"}
	}
	t := newTable(w, header...)
	for _, p := range ps {
		row := []string{p.Topic, fmt.Sprint(p.Partition), formatCount(p.NextOffset)}
		if target {
			row = append(row, formatCount(p.TargetOffset))
		}
		t.row(append(row, formatCount(p.LastStableOffset), formatCount(p.HighWatermark), formatCount(p.Lag))...)
	}
	return t.flush()
}

// lagReport is `kreplay lag KEY -o json`: the documented `-o json` fields (README)
// and the version's partitions.
type lagReport struct {
	Key           string                    `json:"key"`
	Projection    string                    `json:"projection"`
	State         string                    `json:"state"`
	Live          bool                      `json:"live"`
	AppliedEvents int64                     `json:"applied_events"`
	Progress      float64                   `json:"progress"`
	ETASeconds    *float64                  `json:"eta_seconds"`
	LagEvents     int64                     `json:"lag_events"`
	LagSeconds    float64                   `json:"lag_seconds"`
	Error         string                    `json:"error"`
	Partitions    []control.PartitionStatus `json:"partitions"`
	UpdatedAt     time.Time                 `json:"updated_at"`
}

func lagOf(st control.Status) lagReport {
	ps := st.Partitions
	if ps == nil {
		ps = []control.PartitionStatus{}
	}
	return lagReport{Key: st.Key, Projection: st.Projection, State: st.State, Live: st.Live,
		AppliedEvents: st.AppliedEvents, Progress: st.Progress, ETASeconds: st.ETASeconds,
		LagEvents: st.LagEvents, LagSeconds: st.LagSeconds, Error: st.Error, Partitions: ps, UpdatedAt: st.UpdatedAt}
}

func writeLag(w io.Writer, st control.Status) error {
	if _, err := fmt.Fprintf(w, "%s (%s): %s events behind, %s\n", st.Key, st.State, formatCount(st.LagEvents), formatSeconds(st.LagSeconds)); err != nil {
		return err
	}
	if len(st.Partitions) == 0 {
		return nil
	}
	return writePartitions(w, st.Partitions, false)
}

// renderProgress is one line of --watch for a version:
//
//	stock_v2 replaying [██████████░░░░░░░░░░]  52.3%  41,200 ev/s  ETA 12s  lag 48,113
//
// without the bar when width is 0. A status older than staleAfter says how old it is; a failed
// version's line ends with its error.
func renderProgress(st control.Status, width int, now time.Time, staleAfter time.Duration) string {
	var b strings.Builder
	b.WriteString(st.Key + " " + st.State)
	if width > 0 {
		b.WriteString(" " + renderBar(st.Progress, width))
	}
	fmt.Fprintf(&b, "  %5s  %s  ETA %s  lag %s", formatPercent(st.Progress), formatRate(st.Rate), formatETA(st.ETASeconds), formatCount(st.LagEvents))
	if age := now.Sub(st.UpdatedAt); !st.UpdatedAt.IsZero() && age > staleAfter {
		fmt.Fprintf(&b, "  (status %s old: is serve running?)", formatDuration(age))
	}
	if st.Error != "" {
		b.WriteString("  error: " + truncate(st.Error, 80))
	}
	return b.String()
}

// renderBar is a progress bar of width cells for a fraction 0..1: [██████░░░░].
func renderBar(progress float64, width int) string {
	if math.IsNaN(progress) {
		progress = 0
	}
	progress = min(max(progress, 0), 1)
	full := int(math.Floor(progress * float64(width)))
	return "[" + strings.Repeat("█", full) + strings.Repeat("░", width-full) + "]"
}

// isTerminal reports whether w is a terminal (a character device), where --watch redraws in
// place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// watchDone says whether a watched version's state ends the watch, and how.
func watchDone(st control.Status) (bool, error) {
	switch st.State {
	case "tailing", "live", "retired":
		return true, nil
	case "failed":
		return true, fmt.Errorf("%s failed: %s", st.Key, orDash(st.Error))
	case "removed":
		return true, fmt.Errorf("%s was removed", st.Key)
	}
	return false, nil
}

// watch refreshes the statuses every second. On a terminal it redraws in place (a progress bar
// for KEY, the table without); elsewhere it prints one plain line per version and refresh, or
// with -o json one JSON document per refresh.
func (a *app) watch(cmd *cobra.Command, cl *control.Client, cfg *topology.Config, key string, timeout time.Duration) error {
	ctx := cmd.Context()
	w := cmd.OutOrStdout()
	tty := isTerminal(w) && !a.json()
	stale := staleAfter(cfg)
	begin := time.Now()
	lastRead := begin // errors are retried until --timeout has passed since the last good read
	seen := false
	open := false // a bar is drawn without its newline
	closeLine := func() {
		if open {
			fmt.Fprintln(w)
			open = false
		}
	}
	defer closeLine()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		sts, err := cl.Statuses(sctx)
		cancel()
		if ctx.Err() != nil {
			if key != "" {
				return fmt.Errorf("interrupted while watching %s", key)
			}
			return nil
		}
		now := time.Now()
		if err != nil && !seen && errors.Is(err, context.DeadlineExceeded) {
			// No status yet: the wait for a first one ran out in a request rather than
			// between two (control.Client.Statuses). Go on waiting.
			sts, err = nil, nil
		}
		if err != nil {
			if now.Sub(lastRead) >= timeout {
				return err
			}
			a.logger.Debug("watch: reading status failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
			continue
		}
		lastRead = now
		if len(sts) > 0 {
			seen = seen || key == ""
		}
		if key == "" {
			if len(sts) == 0 && !seen && now.Sub(begin) >= timeout {
				return noStatusError(cfg, timeout)
			}
			if err := a.drawAll(w, tty, sts, now, stale); err != nil {
				return err
			}
		} else {
			st := findStatus(sts, key)
			switch {
			case st == nil && seen:
				return fmt.Errorf("%s was removed", key)
			case st == nil && now.Sub(begin) >= timeout:
				if len(sts) == 0 {
					return noStatusError(cfg, timeout)
				}
				return unknownStatus(key, sts, cfg)
			case st != nil:
				seen = true
				switch {
				case a.json():
					if err := json.NewEncoder(w).Encode(st); err != nil {
						return err
					}
				case tty:
					fmt.Fprint(w, "\r"+renderProgress(*st, barWidth, now, stale)+"\x1b[K")
					open = true
				default:
					fmt.Fprintln(w, now.Format("15:04:05")+" "+renderProgress(*st, 0, now, stale))
				}
				if done, err := watchDone(*st); done {
					return err
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// drawAll is one refresh of --watch without KEY.
func (a *app) drawAll(w io.Writer, tty bool, sts []control.Status, now time.Time, stale time.Duration) error {
	switch {
	case a.json():
		if sts == nil {
			sts = []control.Status{}
		}
		return json.NewEncoder(w).Encode(sts)
	case tty:
		fmt.Fprint(w, "\x1b[H\x1b[2J")
		fmt.Fprintf(w, "%s  (refreshing every second; Ctrl-C to stop)\n\n", now.Format("15:04:05"))
		if err := writeStatusTable(w, sts); err != nil {
			return err
		}
		warnStale(w, sts, now, stale)
		return nil
	}
	for _, st := range sts {
		if _, err := fmt.Fprintln(w, now.Format("15:04:05")+" "+renderProgress(st, 0, now, stale)); err != nil {
			return err
		}
	}
	return nil
}
