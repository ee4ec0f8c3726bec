package processor

import (
	"sync"
)

// health is what /readyz reports: whether PostgreSQL and Kafka answered lately. A probe checks
// both every second; consumers and appliers report failures as they meet them.
type health struct {
	mu       sync.Mutex
	m        *metrics
	pgErr    error
	kafkaErr error
	pgOK     bool
	kafkaOK  bool
}

func (h *health) postgres(ok bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pgOK, h.pgErr = ok, err
	h.m.up.WithLabelValues("postgres").Set(b2f(ok))
}

func (h *health) kafka(ok bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kafkaOK, h.kafkaErr = ok, err
	h.m.up.WithLabelValues("kafka").Set(b2f(ok))
}

// ready reports whether both dependencies answer, and if not, why.
func (h *health) ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.pgOK && h.pgErr != nil:
		return false, "postgres: " + h.pgErr.Error()
	case !h.pgOK:
		return false, "postgres: not connected yet (starting)"
	case !h.kafkaOK && h.kafkaErr != nil:
		return false, "kafka: " + h.kafkaErr.Error()
	case !h.kafkaOK:
		return false, "kafka: not connected yet"
	}
	return true, "ok"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
