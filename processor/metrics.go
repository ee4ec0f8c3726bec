package processor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kreplay/kreplay/store"
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
	lagEvents     *prometheus.GaugeVec
	lagSeconds    *prometheus.GaugeVec
	state         *prometheus.GaugeVec
	progress      *prometheus.GaugeVec
	eta           *prometheus.GaugeVec
	drift         *prometheus.GaugeVec
	promotions    *prometheus.CounterVec
	swapDuration  *prometheus.HistogramVec
	fenced        *prometheus.CounterVec
	commands      *prometheus.CounterVec
	rejected      *prometheus.CounterVec
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
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_lag_events",
			Help: "Events not yet applied: sum over partitions of high watermark minus next offset."}, pv),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_lag_seconds",
			Help: "Age of the oldest event not yet applied (0 when caught up)."}, pv),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_replay_state",
			Help: "1 for the state each version is in, 0 for the others."}, append(pv, "state")),
		progress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_replay_progress",
			Help: "Fraction (0..1) of the high watermarks measured at start that a version has applied."}, pv),
		eta: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_replay_eta_seconds",
			Help: "Estimated seconds until a replaying version reaches its start watermarks, from its recent rate."}, pv),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_definition_drift",
			Help: "1 when the config file's definition of the projection differs from the live version's snapshot."}, pv),
		promotions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_promotions_total",
			Help: "Switches of a projection's live version (kind: promote or rollback)."}, []string{"projection", "kind"}),
		swapDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kreplay_swap_duration_seconds",
			Help:    "Duration of the view swap transaction of a promote or rollback (the successful attempt).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"projection"}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_fenced_batches_total",
			Help: "Batches refused because this member no longer owned their partitions (a newer group generation claimed them): nothing was written."}, pv),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_control_commands_total",
			Help: "Control commands by command and result (ok, rejected, unauthorized, malformed)."}, []string{"command", "result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_control_unauthorized_total",
			Help: "Control records refused for a missing or wrong signature."}, []string{"reason"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_dependency_up",
			Help: "1 when the dependency (kafka, postgres) answered at the last check."}, []string{"dependency"}),
	}
	reg.MustRegister(m.applied, m.failed, m.late, m.batchDuration, m.batchEvents, m.lagEvents, m.lagSeconds,
		m.state, m.progress, m.eta, m.drift, m.promotions, m.swapDuration, m.fenced, m.commands, m.rejected, m.up)
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

func (v *versionMetrics) failed(reason, policy string) prometheus.Counter {
	return v.m.failed.WithLabelValues(v.labels[0], v.labels[1], reason, policy)
}

// setState sets the state-set gauge of a version.
func (m *metrics) setState(projection, key string, s store.State) {
	for _, st := range store.States {
		val := 0.0
		if st == s {
			val = 1
		}
		m.state.WithLabelValues(projection, key, string(st)).Set(val)
	}
}

// forget drops the series of a removed version (its state too: a removed version is gone from
// dashboards' version lists).
func (m *metrics) forget(projection, key string) {
	l := prometheus.Labels{"projection": projection, "version": key}
	for _, g := range []*prometheus.GaugeVec{m.lagEvents, m.lagSeconds, m.progress, m.eta, m.drift} {
		g.Delete(l)
	}
	m.state.DeletePartialMatch(l)
}

// initSeries creates the series dashboards expect to read as 0 before anything happened: the
// promotions of each projection, the failure policies of a version, the control commands.
func (m *metrics) initSeries(projections []string) {
	for _, p := range projections {
		for _, kind := range []string{"promote", "rollback"} {
			m.promotions.WithLabelValues(p, kind)
		}
	}
	for _, c := range Commands {
		for _, r := range []string{"ok", "rejected", "failed"} {
			m.commands.WithLabelValues(c, r)
		}
	}
	for _, r := range []string{"unsigned", "bad_signature"} {
		m.rejected.WithLabelValues(r)
	}
}
