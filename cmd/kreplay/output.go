package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Output: human text by default (tables through tabwriter, numbers with thousands
// separators, durations such as 1m20s), JSON with -o json. The formatting functions are pure
// so that they are unit-tested.

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		// A tab or newline in a cell (an error message, a query) would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// formatCount writes n with thousands separators: 41200 -> "41,200".
func formatCount(n int64) string {
	if n < 0 {
		return "-" + formatCount(-n)
	}
	s := strconv.FormatInt(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// formatDuration writes a duration for humans, to the second above one second and with at
// most two units: 0s, <1s, 12s, 1m20s, 2h5m, 3d4h.
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return "<1s"
	}
	s := int64(math.Round(d.Seconds()))
	days, s := s/86400, s%86400
	hours, s := s/3600, s%3600
	mins, secs := s/60, s%60
	switch {
	case days > 0:
		return unit2(days, "d", hours, "h")
	case hours > 0:
		return unit2(hours, "h", mins, "m")
	case mins > 0:
		return unit2(mins, "m", secs, "s")
	}
	return fmt.Sprintf("%ds", secs)
}

func unit2(a int64, ua string, b int64, ub string) string {
	if b == 0 {
		return fmt.Sprintf("%d%s", a, ua)
	}
	return fmt.Sprintf("%d%s%d%s", a, ua, b, ub)
}

// formatSeconds is formatDuration of a number of seconds.
func formatSeconds(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return "-"
	}
	return formatDuration(time.Duration(s * float64(time.Second)))
}

// formatETA is an ETA in seconds, "-" when unknown.
func formatETA(eta *float64) string {
	if eta == nil {
		return "-"
	}
	return formatSeconds(*eta)
}

// formatPercent writes a fraction 0..1 as a percentage with one decimal: "52.3%". It never
// shows 100.0% for a fraction short of 1, so that "done" is never claimed early.
func formatPercent(f float64) string {
	if math.IsNaN(f) {
		return "-"
	}
	f = min(max(f, 0), 1)
	p := math.Floor(f*1000) / 10
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// formatRate writes an events-per-second rate: "41,200 ev/s".
func formatRate(r float64) string {
	if r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return "0 ev/s"
	}
	return formatCount(int64(math.Round(r))) + " ev/s"
}

// formatLagSeconds writes seconds behind with one decimal ("3.2"), for the LAG(s) column.
func formatLagSeconds(s float64) string {
	if s <= 0 || math.IsNaN(s) {
		return "0"
	}
	return strconv.FormatFloat(s, 'f', 1, 64)
}

// truncate shortens s to at most n runes, marking the cut with an ellipsis.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return "…"
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
