package processor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kreplay/kreplay/topology"
)

// metrics are kreplay's own Prometheus metrics, on a registry of the processor's (franz-go's
// client metrics, from kprom, share it under kreplay_kafka_*). Labels are bounded: projection,
// version (a replay key), state, command, result, reason, policy — never event data.
type metrics struct {
	applied       *prometheus.CounterVec
	failed        *prometheus.CounterVec
	late          *prometheus.CounterVec
	batchDuration *prometheus.HistogramVec
	batchEvents   *prometheus.HistogramVec
	fenced        *prometheus.CounterVec
	retries       *prometheus.CounterVec
	up            *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	pv := []string{"projection", "version"}
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_events_applied_total",
			Help: "Events applied and committed (with their checkpoint) to a version's tables."}, pv),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_events_failed_total",
			Help: "Poison events (reason: decode or handler) by the on_error policy that handled them (fail, skip, dead_letter)."},
			append(pv, "reason", "policy")),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_late_events_total",
			Help: "Events merged after an event with a greater (created_at, version, topic, partition, offset) had already been applied (ordering: global)."}, pv),
		batchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kreplay_apply_batch_duration_seconds",
			Help: "Duration of one apply transaction (handlers and checkpoint).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, pv),
		batchEvents: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kreplay_apply_batch_events",
			Help: "Events per apply transaction.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}, pv),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_fenced_batches_total",
			Help: "Batches refused because this member no longer owned their partitions (a newer group generation claimed them): nothing was written."}, pv),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_apply_retries_total",
			Help: "Batches that failed for a reason of the environment and were retried without advancing (cause: sqlstate_<class>, connection, other)."},
			append(pv, "cause")),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_dependency_up",
			Help: "1 when the dependency (kafka, postgres) answered at the last check."}, []string{"dependency"}),
	}
	reg.MustRegister(m.applied, m.failed, m.late, m.batchDuration, m.batchEvents, m.fenced, m.retries, m.up)
	return m
}

// versionMetrics are a version's children of the metric vectors, bound once per runner.
type versionMetrics struct {
	m             *metrics
	labels        []string
	applied       prometheus.Counter
	late          prometheus.Counter
	batchDuration prometheus.Observer
	batchEvents   prometheus.Observer
	fenced        prometheus.Counter
}

func (m *metrics) version(projection, key string, policy topology.OnError) *versionMetrics {
	for _, reason := range []string{"decode", "handler"} {
		m.failed.WithLabelValues(projection, key, reason, string(policy)) // 0 until a poison event
	}
	return &versionMetrics{
		m: m, labels: []string{projection, key},
		applied:       m.applied.WithLabelValues(projection, key),
		late:          m.late.WithLabelValues(projection, key),
		batchDuration: m.batchDuration.WithLabelValues(projection, key),
		batchEvents:   m.batchEvents.WithLabelValues(projection, key),
		fenced:        m.fenced.WithLabelValues(projection, key),
	}
}

func (v *versionMetrics) retries(cause string) prometheus.Counter {
	return v.m.retries.WithLabelValues(v.labels[0], v.labels[1], cause)
}

func (v *versionMetrics) failed(reason, policy string) prometheus.Counter {
	return v.m.failed.WithLabelValues(v.labels[0], v.labels[1], reason, policy)
}
