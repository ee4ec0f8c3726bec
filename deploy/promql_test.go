package deploy

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// selector is one metric selector of a PromQL expression: the metric name and the label names
// its matchers use.
type selector struct {
	Metric string
	Labels []string
}

// promqlRefs are the names a PromQL expression refers to: its selectors, and the label names
// of its by/without/on/ignoring/group_left/group_right clauses.
type promqlRefs struct {
	Selectors []selector
	Grouping  []string
}

// Metrics are the metric names of the selectors, in order of appearance, without duplicates.
func (r promqlRefs) Metrics() []string {
	var out []string
	for _, s := range r.Selectors {
		if !slices.Contains(out, s.Metric) {
			out = append(out, s.Metric)
		}
	}
	return out
}

// PromQL words that are never metric names: aggregation operators (which may be followed by a
// by/without clause before their parenthesis), binary set operators and modifiers.
var (
	promqlAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
		"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
	promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
	promqlGrouping = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
)

// parsePromQL finds the metric names and label names of a PromQL expression, as Grafana sends
// it to Prometheus (with $variables and ${variables} still in it). It is a lexer, not a
// parser: function names (an identifier followed by "("), keywords, label values (strings),
// range selectors and durations ([5m], offset 1h), numbers and Grafana variables are skipped;
// every other identifier is a metric name.
func parsePromQL(expr string) promqlRefs {
	var refs promqlRefs
	i, n := 0, len(expr)
	for i < n {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '#':
			for i < n && expr[i] != '\n' {
				i++
			}
		case c == '{':
			// A selector without a metric name ({__name__="x"}) is not used by the dashboard;
			// matchers are attributed to the preceding metric where there is one.
			end := matching(expr, i, '{', '}')
			labels := matcherLabels(expr[i+1 : end])
			if k := len(refs.Selectors) - 1; k >= 0 && lastIdentEnd(expr, i) {
				refs.Selectors[k].Labels = append(refs.Selectors[k].Labels, labels...)
			}
			i = end + 1
		case c == '[':
			i = matching(expr, i, '[', ']') + 1
		case c == '$':
			i++
			if i < n && expr[i] == '{' {
				i = matching(expr, i, '{', '}') + 1
				break
			}
			for i < n && isIdentByte(expr[i]) {
				i++
			}
		case isDigit(c) || c == '.' && i+1 < n && isDigit(expr[i+1]):
			for i < n && (isIdentByte(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < n && isIdentByte(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpace(expr, i)
			lower := strings.ToLower(word)
			switch {
			case slices.Contains(promqlGrouping, lower):
				if next < n && expr[next] == '(' {
					end := matching(expr, next, '(', ')')
					for _, l := range strings.Split(expr[next+1:end], ",") {
						if l = strings.TrimSpace(l); l != "" {
							refs.Grouping = append(refs.Grouping, l)
						}
					}
					i = end + 1
				}
			case slices.Contains(promqlAggregations, lower), slices.Contains(promqlKeywords, lower):
			case next < n && expr[next] == '(':
				// a function call
			default:
				refs.Selectors = append(refs.Selectors, selector{Metric: word})
			}
		default:
			i++
		}
	}
	return refs
}

// lastIdentEnd reports whether the text before position i (a '{') ends with an identifier
// (metric{...}) rather than an operator or parenthesis ({...} alone).
func lastIdentEnd(expr string, i int) bool {
	j := i - 1
	for j >= 0 && (expr[j] == ' ' || expr[j] == '\t' || expr[j] == '\n') {
		j--
	}
	return j >= 0 && isIdentByte(expr[j])
}

// matcherLabels returns the label names of the matchers inside a selector's braces.
func matcherLabels(body string) []string {
	var out []string
	i, n := 0, len(body)
	for i < n {
		c := body[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(body, i)
		case isIdentStart(c):
			start := i
			for i < n && isIdentByte(body[i]) {
				i++
			}
			out = append(out, body[start:i])
			// skip the operator and the value, up to the next matcher
			for i < n && body[i] != ',' {
				if body[i] == '"' || body[i] == '\'' || body[i] == '`' {
					i = skipString(body, i)
					continue
				}
				i++
			}
		default:
			i++
		}
	}
	return out
}

// skipString returns the position after the string literal starting at i.
func skipString(s string, i int) int {
	q := s[i]
	i++
	for i < len(s) {
		switch {
		case s[i] == '\\' && q != '`':
			i += 2
		case s[i] == q:
			return i + 1
		default:
			i++
		}
	}
	return len(s)
}

// matching returns the position of the bracket that closes the one at i (strings honoured), or
// len(s)-1 when it is missing.
func matching(s string, i int, open, close byte) int {
	depth := 0
	for i < len(s) {
		switch s[i] {
		case '"', '\'', '`':
			i = skipString(s, i)
			continue
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return len(s) - 1
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isIdentByte(c byte) bool { return isIdentStart(c) || isDigit(c) }

// The lexer must find exactly the metrics a query reads, or the dashboard check below proves
// nothing.
func TestParsePromQLFindsMetricAndLabelNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr     string
		metrics  []string
		labels   map[string][]string // metric -> matcher labels
		grouping []string
	}{
		{
			expr:     `sum by (projection, version) (kreplay_lag_events{projection=~"$projection", version=~"${version}"})`,
			metrics:  []string{"kreplay_lag_events"},
			labels:   map[string][]string{"kreplay_lag_events": {"projection", "version"}},
			grouping: []string{"projection", "version"},
		},
		{
			expr:     `histogram_quantile(0.99, sum by (le, projection) (rate(kreplay_apply_batch_duration_seconds_bucket{projection=~"a|b"}[$__rate_interval])))`,
			metrics:  []string{"kreplay_apply_batch_duration_seconds_bucket"},
			labels:   map[string][]string{"kreplay_apply_batch_duration_seconds_bucket": {"projection"}},
			grouping: []string{"le", "projection"},
		},
		{
			expr:     "sum(rate(a_total[5m] offset 1h)) by (x)\n/ on (x) group_left (y)\nsum without (z) (b_count) > bool 0.5e3",
			metrics:  []string{"a_total", "b_count"},
			labels:   map[string][]string{},
			grouping: []string{"x", "x", "y", "z"},
		},
		{
			expr:     `sum by (group_id) (kminion_kafka_consumer_group_topic_lag{group_id=~"kreplay\\.$projection\\..*", topic_name!="x,y"}) unless on() vector(1) == 0`,
			metrics:  []string{"kminion_kafka_consumer_group_topic_lag"},
			labels:   map[string][]string{"kminion_kafka_consumer_group_topic_lag": {"group_id", "topic_name"}},
			grouping: []string{"group_id"},
		},
		{
			expr:    `label_replace(up_total, "dst", "$1", "src", "(.*)") and count_values("v", m:recorded:rule)`,
			metrics: []string{"up_total", "m:recorded:rule"},
			labels:  map[string][]string{},
		},
	} {
		refs := parsePromQL(tc.expr)
		require.Equal(t, tc.metrics, refs.Metrics(), "metrics of %s", tc.expr)
		for _, s := range refs.Selectors {
			require.ElementsMatch(t, tc.labels[s.Metric], s.Labels, "matcher labels of %s in %s", s.Metric, tc.expr)
		}
		require.Equal(t, tc.grouping, refs.Grouping, "grouping labels of %s", tc.expr)
	}
}
