package leader

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/store"
)

// metrics are the control plane's: commands and the versions' status gauges (lag, state,
// progress, ETA, drift), computed by the status loop and exported by the leader only: one series
// per version in the installation, whatever the number of instances.
type metrics struct {
	commands   *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	lagEvents  *prometheus.GaugeVec
	lagSeconds *prometheus.GaugeVec
	state      *prometheus.GaugeVec
	progress   *prometheus.GaugeVec
	eta        *prometheus.GaugeVec
	drift      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	pv := []string{"projection", "version"}
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_control_commands_total",
			Help: "Control commands by command and result (ok, rejected, failed, duplicate, malformed, unauthorized, expired, canceled, other_installation)."}, []string{"command", "result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kreplay_control_unauthorized_total",
			Help: "Control records refused for a missing or wrong signature."}, []string{"reason"}),
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_lag_events",
			Help: "Events not yet applied: sum over partitions of last stable offset minus next offset (exported by the leader)."}, pv),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_lag_seconds",
			Help: "Age of the oldest event not yet applied (0 when caught up; exported by the leader)."}, pv),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_replay_state",
			Help: "1 for the state each version is in, 0 for the others (exported by the leader)."}, append(pv, "state")),
		progress: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_replay_progress",
			Help: "Fraction (0..1) of the last stable offsets measured at start that a version has applied (exported by the leader)."}, pv),
		eta: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_replay_eta_seconds",
			Help: "Estimated seconds until a replaying version reaches its start watermarks, from its recent rate (exported by the leader)."}, pv),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kreplay_definition_drift",
			Help: "1 when the config file's definition of the projection differs from the live version's snapshot (exported by the leader)."}, pv),
	}
	reg.MustRegister(m.commands, m.rejected, m.lagEvents, m.lagSeconds, m.state, m.progress, m.eta, m.drift)
	// Series dashboards expect to read as 0 before anything happened.
	for _, c := range control.Commands {
		for _, r := range []string{"ok", "rejected", "failed", "expired"} {
			m.commands.WithLabelValues(c, r)
		}
	}
	for _, r := range []string{"unsigned", "bad_signature"} {
		m.rejected.WithLabelValues(r)
	}
	return m
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

// forgetVersions drops every version's series: this instance stopped leading.
func (m *metrics) forgetVersions() {
	for _, g := range []*prometheus.GaugeVec{m.lagEvents, m.lagSeconds, m.progress, m.eta, m.drift, m.state} {
		g.Reset()
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
