package testkit

import (
	"fmt"
	"regexp"
	"strconv"
)

// Sample is one sample line of a Prometheus text exposition (/metrics).
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

var (
	sampleRE    = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)`)
	labelPairRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// ParseSample parses a sample line (not a comment or an empty line).
func ParseSample(line string) (Sample, error) {
	m := sampleRE.FindStringSubmatch(line)
	if m == nil {
		return Sample{}, fmt.Errorf("not a sample line: %q", line)
	}
	v, err := strconv.ParseFloat(m[3], 64)
	if err != nil {
		return Sample{}, fmt.Errorf("sample line %q: %w", line, err)
	}
	s := Sample{Name: m[1], Labels: map[string]string{}, Value: v}
	for _, p := range labelPairRE.FindAllStringSubmatch(m[2], -1) {
		s.Labels[p[1]] = p[2]
	}
	return s, nil
}

// HasLabels reports whether the sample's labels include every label of want, with its value.
func (s Sample) HasLabels(want map[string]string) bool {
	for k, v := range want {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}
