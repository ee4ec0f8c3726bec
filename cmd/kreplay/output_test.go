package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

func TestFormatCount(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		0: "0", 7: "7", 999: "999", 1000: "1,000", 41200: "41,200", 123456: "123,456",
		1234567: "1,234,567", -48113: "-48,113",
	} {
		require.Equal(t, want, formatCount(n), "formatCount(%d)", n)
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                        "0s",
		-time.Second:             "0s",
		300 * time.Millisecond:   "<1s",
		12 * time.Second:         "12s",
		12600 * time.Millisecond: "13s",
		80 * time.Second:         "1m20s",
		65 * time.Second:         "1m5s",
		2 * time.Minute:          "2m",
		2*time.Hour + 5*time.Minute + 9*time.Second: "2h5m",
		50 * time.Hour: "2d2h",
	} {
		require.Equal(t, want, formatDuration(d), "formatDuration(%s)", d)
	}
	require.Equal(t, "1m20s", formatSeconds(80.2))
	require.Equal(t, "-", formatETA(nil))
	eta := 12.4
	require.Equal(t, "12s", formatETA(&eta))
}

func TestFormatPercentRateLag(t *testing.T) {
	t.Parallel()
	require.Equal(t, "0.0%", formatPercent(0))
	require.Equal(t, "52.3%", formatPercent(0.523))
	require.Equal(t, "99.9%", formatPercent(0.99999), "never claims done early")
	require.Equal(t, "100.0%", formatPercent(1))
	require.Equal(t, "100.0%", formatPercent(1.3))
	require.Equal(t, "0.0%", formatPercent(-0.1))
	require.Equal(t, "41,200 ev/s", formatRate(41199.6))
	require.Equal(t, "0 ev/s", formatRate(0))
	require.Equal(t, "3.2", formatLagSeconds(3.24))
	require.Equal(t, "0", formatLagSeconds(0))
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	require.Equal(t, "short", truncate("short", 10))
	require.Equal(t, "abcdefghi…", truncate("abcdefghijklmnop", 10))
	require.Equal(t, "a b c", truncate("a\n b\t c", 10), "whitespace folded, so a table row stays one line")
	require.Equal(t, "héllo wör…", truncate("héllo wörld", 10), "counts runes, not bytes")
}

func TestRenderBar(t *testing.T) {
	t.Parallel()
	require.Equal(t, "[░░░░░░░░░░░░░░░░░░░░]", renderBar(0, 20))
	require.Equal(t, "[██████████░░░░░░░░░░]", renderBar(0.523, 20))
	require.Equal(t, "[███████████████████░]", renderBar(0.999, 20), "a bar is full only when done")
	require.Equal(t, "[████████████████████]", renderBar(1, 20))
	require.Equal(t, "[████████████████████]", renderBar(1.7, 20))
	require.Equal(t, "[░░░░░]", renderBar(-1, 5))
}

func TestRenderProgress(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	eta := 12.0
	st := control.Status{Key: "stock_v2", State: "replaying", Progress: 0.523, Rate: 41200, ETASeconds: &eta,
		LagEvents: 48113, UpdatedAt: now.Add(-time.Second)}
	require.Equal(t, "stock_v2 replaying [██████████░░░░░░░░░░]  52.3%  41,200 ev/s  ETA 12s  lag 48,113",
		renderProgress(st, 20, now, 30*time.Second))
	require.Equal(t, "stock_v2 replaying  52.3%  41,200 ev/s  ETA 12s  lag 48,113",
		renderProgress(st, 0, now, 30*time.Second), "the plain line has no bar")

	st.UpdatedAt = now.Add(-65 * time.Second)
	require.Contains(t, renderProgress(st, 20, now, 30*time.Second), "(status 1m5s old: is serve running?)")

	failed := control.Status{Key: "stock_v2", State: "failed", Progress: 0.1, Error: "handler MoneyDeposited: null value", UpdatedAt: now}
	line := renderProgress(failed, 10, now, 30*time.Second)
	require.True(t, strings.HasPrefix(line, "stock_v2 failed [█░░░░░░░░░]  10.0%  0 ev/s  ETA -  lag 0"), line)
	require.True(t, strings.HasSuffix(line, "error: handler MoneyDeposited: null value"), line)
}

func TestWatchDone(t *testing.T) {
	t.Parallel()
	for state, want := range map[string]struct {
		done bool
		err  string
	}{
		"created": {}, "replaying": {}, "paused": {},
		"tailing": {done: true}, "live": {done: true}, "retired": {done: true},
		"failed":  {done: true, err: "stock_v2 failed: boom"},
		"removed": {done: true, err: "stock_v2 was removed"},
	} {
		done, err := watchDone(control.Status{Key: "stock_v2", State: state, Error: "boom"})
		require.Equal(t, want.done, done, state)
		if want.err == "" {
			require.NoError(t, err, state)
		} else {
			require.EqualError(t, err, want.err, state)
		}
	}
}

func TestStaleNote(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sts := []control.Status{{Key: "a", UpdatedAt: now.Add(-2 * time.Minute)}, {Key: "b", UpdatedAt: now.Add(-65 * time.Second)}}
	require.Equal(t, "warning: no kreplay serve has published status for 1m5s; these figures may be out of date (is serve running?)",
		staleNote(sts, now, 30*time.Second), "the newest status counts")
	require.Empty(t, staleNote(sts, now, 2*time.Minute))
	require.Empty(t, staleNote(nil, now, time.Second))
}

func TestWriteStatusTable(t *testing.T) {
	t.Parallel()
	eta := 80.0
	sts := []control.Status{
		{Key: "stock_v1", Projection: "stock", State: "live", Live: true, AppliedEvents: 1234567, Progress: 1, LagEvents: 0},
		{Key: "stock_v2", Projection: "stock", State: "replaying", AppliedEvents: 41200, Progress: 0.523, ETASeconds: &eta,
			LagEvents: 48113, LagSeconds: 3.24, Drift: true},
		{Key: "stock_v3", Projection: "stock", State: "failed", Error: strings.Repeat("x", 100)},
	}
	var b bytes.Buffer
	require.NoError(t, writeStatusTable(&b, sts))
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	require.Len(t, lines, 5)
	require.Equal(t, []string{"KEY", "PROJECTION", "STATE", "LIVE", "APPLIED", "PROGRESS", "ETA", "LAG", "LAG(s)", "ERROR"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"stock_v1", "stock", "live", "yes", "1,234,567", "-", "-", "0", "0", "-"}, strings.Fields(lines[1]))
	require.Equal(t, []string{"stock_v2*", "stock", "replaying", "no", "41,200", "52.3%", "1m20s", "48,113", "3.2", "-"}, strings.Fields(lines[2]))
	require.Contains(t, lines[3], strings.Repeat("x", 59)+"…", "long errors are truncated")
	require.NotContains(t, lines[3], strings.Repeat("x", 60))
	require.True(t, strings.HasPrefix(lines[4], "* "), "drift is explained in a note: %q", lines[4])
}

func TestWriteStatusDetailAndLag(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := control.Status{Key: "stock_v2", Projection: "stock", State: "tailing", LiveVersion: "stock_v1",
		AppliedEvents: 2000, LagEvents: 30, LagSeconds: 1.5, Options: store.Options{EventTypes: []string{"A", "B"}, AutoPromote: true},
		Partitions: []control.PartitionStatus{
			{Topic: "stock.moves", Partition: 0, NextOffset: 1000, TargetOffset: 990, LastStableOffset: 1010, HighWatermark: 1010, Lag: 10},
			{Topic: "stock.moves", Partition: 1, NextOffset: 1000, TargetOffset: 1000, LastStableOffset: 1020, HighWatermark: 1025, Lag: 20},
		}, UpdatedAt: now.Add(-3 * time.Second)}
	var b bytes.Buffer
	require.NoError(t, writeStatusDetail(&b, st, now))
	out := b.String()
	for _, want := range []string{"live version: stock_v1", "2,000 events (0 skipped, 0 late)", "30 events, 2s", "event types A, B; auto-promote", "(3s ago)"} {
		require.Contains(t, out, want)
	}
	require.Contains(t, out, "TOPIC")
	require.Regexp(t, `stock\.moves\s+1\s+1,000\s+1,000\s+1,020\s+1,025\s+20`, out, "next, target, last stable, high watermark (a transaction is open), lag")

	b.Reset()
	require.NoError(t, writeLag(&b, st))
	require.True(t, strings.HasPrefix(b.String(), "stock_v2 (tailing): 30 events behind, 2s\n"), b.String())
	require.Regexp(t, `stock\.moves\s+0\s+1,000\s+1,010\s+1,010\s+10`, b.String())

	js, err := json.Marshal(lagOf(st))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(js, &m))
	require.EqualValues(t, 30, m["lag_events"])
	require.EqualValues(t, 1.5, m["lag_seconds"])
	require.Len(t, m["partitions"], 2)
}

func TestOutcomeLines(t *testing.T) {
	t.Parallel()
	require.Equal(t, "promoted stock_v2: live (stock_v1 retired, swap 3.2ms, 1 attempt)",
		swapLine(control.SwapReport{Projection: "stock", From: "stock_v1", To: "stock_v2", Kind: "promote", Attempts: 1, SwapDurationMS: 3.21}))
	require.Equal(t, "promoted stock_v2: live (stock_v1 retired, swap 12.0ms, 3 attempts, waited 4s)",
		swapLine(control.SwapReport{Projection: "stock", From: "stock_v1", To: "stock_v2", Kind: "promote", Attempts: 3, SwapDurationMS: 12, WaitedSeconds: 4.2}))
	require.Equal(t, "rolled back stock: stock_v1 is live (stock_v2 retired, swap 2.5ms, 1 attempt)",
		swapLine(control.SwapReport{Projection: "stock", From: "stock_v2", To: "stock_v1", Kind: "rollback", Attempts: 1, SwapDurationMS: 2.5}))
	require.Equal(t, "promoted stock_v2: live (stock_v1 failed, swap 2.5ms, 1 attempt)",
		swapLine(control.SwapReport{Projection: "stock", From: "stock_v1", To: "stock_v2", Kind: "promote", Attempts: 1, SwapDurationMS: 2.5, PreviousState: "failed"}))
	require.Equal(t, "started stock_v2: replaying", transitionLine("start", "stock_v2", &control.Status{State: "replaying"}))
	require.Equal(t, "paused stock_v2", transitionLine("pause", "stock_v2", &control.Status{State: "paused"}))
	require.Equal(t, "removed stock_v2", transitionLine("remove", "stock_v2", nil))
}

func TestShapeChangeLines(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	require.NoError(t, writeSwapReport(&b, control.SwapReport{Projection: "stock", From: "stock_v1", To: "stock_v2", Kind: "promote", Attempts: 1, SwapDurationMS: 2.5,
		ShapeChanges: []store.ShapeChange{
			{View: "public.stock", Removed: []store.Column{{Name: "note", Type: "text"}}, Retyped: []store.ColumnRetype{{Name: "qty", From: "integer", To: "bigint"}},
				Moved: []store.ColumnMove{{Name: "sku", From: 3, To: 2}}, Added: []store.Column{{Name: "price", Type: "numeric(10,2)"}}},
			{View: "public.stock_history", Created: true, Added: []store.Column{{Name: "sku", Type: "text"}, {Name: "at", Type: "timestamp with time zone"}}},
			{View: "public.stock_notes", Dropped: true, Removed: []store.Column{{Name: "sku", Type: "text COLLATE \"C\""}}},
		}}))
	require.Equal(t, `promoted stock_v2: live (stock_v1 retired, swap 2.5ms, 1 attempt)
view shape: public.stock: removes note text; retypes qty integer -> bigint; moves sku (position 3 -> 2); adds price numeric(10,2) (breaking)
view shape: public.stock_history: new view (sku text, at timestamp with time zone)
view shape: public.stock_notes: dropped (sku text COLLATE "C") (breaking)
`, b.String())
}

func TestWriteVerifyReport(t *testing.T) {
	t.Parallel()
	rep := control.VerifyReport{Version: "stock_v2", Against: "stock_v1", Passed: false,
		Results: []store.CheckResult{
			{Kind: "check", Name: "SELECT count(*) FROM stock", Equal: true, A: "42", B: "42"},
			{Kind: "checksum", Name: "stock", Equal: false, A: strings.Repeat("a", 64), B: strings.Repeat("b", 64)},
		},
		Differs: []string{"checksum stock"}}
	var b bytes.Buffer
	require.NoError(t, writeVerifyReport(&b, rep))
	out := b.String()
	require.Regexp(t, `check\s+SELECT count\(\*\) FROM stock\s+yes\s+42\s+42`, out)
	require.Contains(t, out, strings.Repeat("a", verifyValueWidth-1)+"…", "long values are truncated")
	require.NotContains(t, out, strings.Repeat("a", verifyValueWidth))
	require.Contains(t, out, "DIFFERS: stock_v2 differs from stock_v1 in 1 comparison: checksum stock")

	rep.Passed, rep.Differs, rep.Results = true, nil, rep.Results[:1]
	b.Reset()
	require.NoError(t, writeVerifyReport(&b, rep))
	require.Contains(t, b.String(), "PASSED: stock_v2 matches stock_v1 (1 comparison)")
	require.NotContains(t, b.String(), "view shape")

	rep.ShapeChanges = []store.ShapeChange{{View: "public.stock", Retyped: []store.ColumnRetype{{Name: "qty", From: "integer", To: "bigint"}}}}
	rep.ShapeChangeNeedsFlag = true
	b.Reset()
	require.NoError(t, writeVerifyReport(&b, rep))
	require.Contains(t, b.String(), "view shape: public.stock: retypes qty integer -> bigint (breaking)\n"+
		"promoting stock_v2 removes, retypes or moves columns readers of the live views see: kreplay promote stock_v2 needs --allow-shape-change\n"+
		"PASSED: stock_v2 matches stock_v1 (1 comparison)\n")
}

// The drift footnote's advice: create when the live version drifts and nothing runs the config's
// definition, promote when a version runs it, nothing when only a retired version drifts.
func TestDriftAdvice(t *testing.T) {
	t.Parallel()
	live := control.Status{Key: "p_v1", Projection: "p", State: "live", Live: true, Drift: true}
	require.Equal(t, "; roll it out with kreplay create", driftAdvice([]control.Status{live}))
	replay := control.Status{Key: "p_v2", Projection: "p", State: "tailing"}
	require.Equal(t, "; promote the version that runs the config's definition", driftAdvice([]control.Status{live, replay}))
	retired := control.Status{Key: "p_v1", Projection: "p", State: "retired", Drift: true}
	promoted := control.Status{Key: "p_v2", Projection: "p", State: "live", Live: true}
	require.Empty(t, driftAdvice([]control.Status{retired, promoted}))
}
