package deploy

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/internal/testkit"
	"github.com/kreplay/kreplay/processor"
	"github.com/kreplay/kreplay/processor/control"
	"github.com/kreplay/kreplay/processor/kafkatest"
	"github.com/kreplay/kreplay/processor/lifecycle"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/store/storetest"
	"github.com/kreplay/kreplay/topology"
)

// kminionMetrics are the metrics kminion documents (docs/metrics.md of
// github.com/redpanda-data/kminion, default namespace "kminion") with their labels. The
// dashboard's kminion_* queries are checked against this list: kminion does not run here.
var kminionMetrics = map[string][]string{
	"kminion_exporter_up": {"version"},
	"kminion_exporter_offset_consumer_records_consumed_total": {},
	"kminion_kafka_broker_info":                               {"address", "broker_id", "is_controller", "port", "rack_id"},
	"kminion_kafka_cluster_info":                              {"broker_count", "cluster_id", "cluster_version", "controller_id"},
	"kminion_kafka_broker_log_dir_size_total_bytes":           {"address", "broker_id", "port", "rack_id"},
	"kminion_kafka_topic_log_dir_size_total_bytes":            {"topic_name"},
	"kminion_kafka_topic_info":                                {"cleanup_policy", "partition_count", "replication_factor", "topic_name"},
	"kminion_kafka_topic_partition_low_water_mark":            {"partition_id", "topic_name"},
	"kminion_kafka_topic_low_water_mark_sum":                  {"topic_name"},
	"kminion_kafka_topic_partition_high_water_mark":           {"partition_id", "topic_name"},
	"kminion_kafka_topic_high_water_mark_sum":                 {"topic_name"},
	"kminion_kafka_consumer_group_info":                       {"coordinator_id", "group_id", "protocol", "protocol_type", "state"},
	"kminion_kafka_consumer_group_members":                    {"group_id"},
	"kminion_kafka_consumer_group_empty_members":              {"group_id"},
	"kminion_kafka_consumer_group_topic_members":              {"group_id", "topic_name"},
	"kminion_kafka_consumer_group_topic_assigned_partitions":  {"group_id", "topic_name"},
	"kminion_kafka_consumer_group_topic_offset_sum":           {"group_id", "topic_name"},
	"kminion_kafka_consumer_group_topic_partition_lag":        {"group_id", "partition_id", "topic_name"},
	"kminion_kafka_consumer_group_topic_lag":                  {"group_id", "topic_name"},
	"kminion_kafka_consumer_group_offset_commits_total":       {"group_id"},
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"instance", "job"}

// statusGauges are exported once per installation for every version (by the leader's status
// loop), so the dashboard sums them over the instances, as any series, per version: a sum that
// multiplied them by the number of instances would show that the export went wrong.
var statusGauges = []string{"kreplay_lag_events", "kreplay_lag_seconds", "kreplay_replay_state",
	"kreplay_replay_progress", "kreplay_replay_eta_seconds", "kreplay_definition_drift"}

// exposition is a parsed /metrics page.
type exposition struct {
	types   map[string]string          // family -> counter, gauge, histogram, ...
	labels  map[string]map[string]bool // family -> label names seen on its samples
	samples []testkit.Sample
}

func parseExposition(t *testing.T, text string) exposition {
	t.Helper()
	e := exposition{types: map[string]string{}, labels: map[string]map[string]bool{}}
	for line := range strings.SplitSeq(text, "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			parts := strings.Fields(f)
			require.Len(t, parts, 2, "TYPE line %q", line)
			e.types[parts[0]] = parts[1]
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := testkit.ParseSample(line)
		require.NoError(t, err)
		e.samples = append(e.samples, s)
		fam := e.family(s.Name)
		if e.labels[fam] == nil {
			e.labels[fam] = map[string]bool{}
		}
		for l := range s.Labels {
			e.labels[fam][l] = true
		}
	}
	return e
}

// family maps a series name to its metric family: name_bucket, name_sum and name_count belong
// to the histogram (or summary) name.
func (e exposition) family(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := e.types[base]; typ == "histogram" || typ == "summary" {
				return base
			}
		}
	}
	return name
}

// has reports whether a series name is exposed with at least one sample: a counter or gauge by
// its name, a histogram through name_bucket, name_sum or name_count.
func (e exposition) has(name string) bool {
	fam := e.family(name)
	if fam == name && (e.types[fam] == "histogram" || e.types[fam] == "summary") {
		return false
	}
	return e.labels[fam] != nil
}

// value is the sum of the samples of name whose labels include want.
func (e exposition) value(name string, want map[string]string) float64 {
	total := 0.0
	for _, s := range e.samples {
		if s.Name == name && s.HasLabels(want) {
			total += s.Value
		}
	}
	return total
}

// expectation is a value the flow of runKreplay must leave in /metrics: the sum of the samples
// of a series whose labels include labels.
type expectation struct {
	series string
	labels map[string]string
	want   float64
}

// flowExpectations are what runKreplay did, as an operator reads it on the dashboard.
var flowExpectations = []expectation{
	{"kreplay_promotions_total", map[string]string{"projection": "balances", "kind": "promote"}, 1},
	{"kreplay_promotions_total", map[string]string{"projection": "balances", "kind": "rollback"}, 1},
	{"kreplay_swap_duration_seconds_count", map[string]string{"projection": "balances"}, 2},
	// the poison event, skipped by the live version and by the replay
	{"kreplay_events_failed_total", map[string]string{"version": "balances_v1", "reason": "decode", "policy": "skip"}, 1},
	{"kreplay_events_failed_total", map[string]string{"version": "balances_v2", "reason": "decode", "policy": "skip"}, 1},
	{"kreplay_replay_state", map[string]string{"version": "balances_v1", "state": "live"}, 1},
	{"kreplay_replay_state", map[string]string{"version": "balances_v2", "state": "retired"}, 1},
	{"kreplay_lag_events", map[string]string{"version": "balances_v1"}, 0},
	{"kreplay_lag_events", map[string]string{"version": "balances_v2"}, 0},
	{"kreplay_replay_progress", map[string]string{"version": "balances_v2"}, 1},
	{"kreplay_control_commands_total", map[string]string{"command": "promote", "result": "rejected"}, 1},
	{"kreplay_control_unauthorized_total", map[string]string{"reason": "unsigned"}, 1},
	{"kreplay_dependency_up", map[string]string{"dependency": "postgres"}, 1},
	{"kreplay_dependency_up", map[string]string{"dependency": "kafka"}, 1},
}

// unmet describes the expectations the exposition does not meet.
func (e exposition) unmet(exps []expectation) []string {
	var out []string
	for _, x := range exps {
		found := false
		for _, s := range e.samples {
			found = found || s.Name == x.series && s.HasLabels(x.labels)
		}
		if got := e.value(x.series, x.labels); !found || got != x.want {
			out = append(out, fmt.Sprintf("%s%v = %v (present: %v), want %v", x.series, x.labels, got, found, x.want))
		}
	}
	return out
}

// kreplayRun is a real kreplay serve (in-process), with what the test did to it.
type kreplayRun struct {
	bank *bankgen.Bank
	expo exposition
}

// runKreplay starts kreplay serve against kfake and a database of its own with the bank
// config, produces events (one of them poison), replays a second version, promotes it, rolls
// back, sends a signed and an unsigned control command, and scrapes /metrics until every
// name in want is exposed and the values the flow implies are there (the status gauges follow
// the catalog every status interval), or 20s pass.
func runKreplay(t *testing.T, want []string) kreplayRun {
	t.Helper()
	const topic = "bank.accounts"
	k := kafkatest.New(t, map[string]int32{topic: 4})
	dbURL := storetest.NewDatabase(t)

	cfg, err := topology.Parse([]byte(bankgen.Config(topic, 4, "global", false)))
	require.NoError(t, err)
	cfg.Kafka.Brokers = k.Addrs
	cfg.Postgres.URL = dbURL
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Control.StatusInterval = 200 * time.Millisecond
	cfg.Control.Secret = "deploy-test-secret" // so that an unsigned command is refused and counted
	cfg.Kafka.SessionTimeout = 3 * time.Second
	cfg.Kafka.RebalanceTimeout = 5 * time.Second
	cfg.Projections[0].OnError = topology.OnErrorSkip // the poison event is counted, the versions go on
	cfg.SetDefaults()
	require.NoError(t, cfg.Validate())

	p := processor.New(cfg, processor.Options{ShutdownTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kreplay serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("kreplay serve did not stop within 30s")
		}
	})
	select {
	case <-p.Started():
	case err := <-done:
		t.Fatalf("kreplay serve did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("kreplay serve did not start within 60s")
	}

	bank := bankgen.New(topic, 4, 50, 1)
	events := bank.Events(500)
	poison := &kgo.Record{Topic: topic, Partition: 0, Key: []byte("acct-poison"), Value: []byte(`{not json`),
		Timestamp: bank.Start.Add(250 * time.Millisecond)}
	k.Produce(slices.Concat(events[:250], []*kgo.Record{poison}, events[250:])...)

	// A replay, promoted and rolled back.
	mgr := p.Manager()
	_, err = mgr.Create(ctx, lifecycle.CreateRequest{Key: "balances_v2", Projection: "balances", Start: true})
	require.NoError(t, err, "create balances_v2")
	db := storetest.Conn(t, dbURL)
	testkit.Eventually(t, 30*time.Second, func() bool {
		var state string
		err := db.QueryRow(ctx, "SELECT state FROM kreplay.versions WHERE key = $1", "balances_v2").Scan(&state)
		require.NoError(t, err)
		return state == string(store.StateTailing)
	}, "balances_v2 did not reach tailing")
	rep, err := mgr.Promote(ctx, "balances_v2", control.PromoteOptions{Wait: control.Duration(30 * time.Second)})
	require.NoError(t, err, "promote balances_v2")
	require.Equal(t, "balances_v1", rep.From)
	require.Equal(t, "balances_v2", rep.To)
	requireBalances(t, ctx, db, bank)
	rep, err = mgr.Rollback(ctx, "balances")
	require.NoError(t, err, "rollback balances")
	require.Equal(t, "balances_v1", rep.To)
	requireBalances(t, ctx, db, bank)

	// Control commands: a signed one through the client (rejected: balances_v1 is already
	// live) and an unsigned record (refused).
	cl, err := control.NewClient(cfg, nil)
	require.NoError(t, err)
	defer cl.Close()
	sendCtx, cancelSend := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSend()
	out, err := cl.Send(sendCtx, control.Command{Command: "promote", Replay: "balances_v1"})
	require.NoError(t, err)
	require.False(t, out.OK, "promoting the live version must be rejected")
	require.NotEmpty(t, out.Error)
	unsigned := &kgo.Record{Topic: cfg.Kafka.ControlTopic, Key: []byte("balances_v2"),
		Value: []byte(`{"id":"deploy-test-unsigned","command":"pause","replay":"balances_v2","issued_at":"2026-01-01T00:00:00Z"}`)}
	require.NoError(t, k.Client().ProduceSync(sendCtx, unsigned).FirstErr())

	// Scrape until every wanted series is there.
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	metricsURL := "http://" + p.HTTPAddr() + "/metrics"
	var expo exposition
	var missing, unmet []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		expo = parseExposition(t, scrape(t, client, metricsURL))
		missing = missing[:0]
		for _, name := range want {
			if !expo.has(name) {
				missing = append(missing, name)
			}
		}
		unmet = expo.unmet(flowExpectations)
		if len(missing) == 0 && len(unmet) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Empty(t, missing, "kreplay does not expose these metrics that the dashboard queries")
	require.Empty(t, unmet, "the metrics do not show what the test did")
	return kreplayRun{bank: bank, expo: expo}
}

func scrape(t *testing.T, client *http.Client, u string) string {
	t.Helper()
	resp, err := client.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// requireBalances checks the live view against the balances the generated history implies.
func requireBalances(t *testing.T, ctx context.Context, db *pgx.Conn, bank *bankgen.Bank) {
	t.Helper()
	var accounts, total int64
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*), coalesce(sum(total), 0) FROM public.balances").Scan(&accounts, &total))
	var wantTotal int64
	for _, v := range bank.Balances() {
		wantTotal += v
	}
	require.Equal(t, int64(len(bank.Balances())), accounts, "accounts in the live view")
	require.Equal(t, wantTotal, total, "sum of the balances in the live view")
}

// The dashboard queries only metrics that kreplay (or kminion) really exposes, with labels they
// really have: a renamed metric or label breaks this test, not a dashboard in production.
func TestDashboardQueriesOnlyMetricsKreplayExposes(t *testing.T) {
	d := loadDashboard(t)
	queries := d.queries(t)
	refs := map[string]promqlRefs{} // where -> refs
	var kreplayNames []string
	used := map[string]bool{}
	for where, q := range queries {
		r := parsePromQL(q)
		require.NotEmpty(t, r.Metrics(), "%s reads no metric: %s", where, q)
		refs[where] = r
		for _, m := range r.Metrics() {
			used[m] = true
			switch {
			case strings.HasPrefix(m, "kminion_"):
				require.Contains(t, kminionMetrics, m, "%s: %s is not a documented kminion metric", where, m)
			case strings.HasPrefix(m, "kreplay_"):
				if !slices.Contains(kreplayNames, m) {
					kreplayNames = append(kreplayNames, m)
				}
			default:
				t.Errorf("%s: %s is neither kreplay's nor kminion's", where, m)
			}
		}
	}
	slices.Sort(kreplayNames)

	// What an operator must see.
	for what, metric := range map[string]string{
		"state": "kreplay_replay_state", "lag in events": "kreplay_lag_events", "lag in seconds": "kreplay_lag_seconds",
		"apply rate": "kreplay_events_applied_total", "replay progress": "kreplay_replay_progress",
		"replay ETA": "kreplay_replay_eta_seconds", "promotions": "kreplay_promotions_total",
		"failures": "kreplay_events_failed_total", "late events": "kreplay_late_events_total",
		"consumer-group lag": "kminion_kafka_consumer_group_topic_lag",
	} {
		require.True(t, used[metric], "the dashboard does not show %s (%s)", what, metric)
	}
	applyRate := false
	for _, q := range queries {
		applyRate = applyRate || regexp.MustCompile(`\brate\(\s*kreplay_events_applied_total\b`).MatchString(q)
	}
	require.True(t, applyRate, "the apply rate is rate(kreplay_events_applied_total[...])")

	// Every status gauge is summed per version (and state): the leader alone exports it, so the
	// sum over the instances is the installation's value.
	for where, q := range queries {
		if strings.HasPrefix(where, "variable ") {
			continue // label_values(selector, label) reads label values, not samples
		}
		for _, g := range statusGauges {
			for _, loc := range regexp.MustCompile(`\b`+g+`\b`).FindAllStringIndex(q, -1) {
				before := q[:loc[0]]
				require.Regexp(t, `sum\s+by\s*\(\s*projection\s*,\s*version\s*(,\s*state\s*)?\)\s*\(\s*$`, before,
					"%s: %s must be aggregated with sum by (projection, version): the leader exports it once per installation\n%s", where, g, q)
			}
		}
	}

	run := runKreplay(t, kreplayNames)
	e := run.expo

	for _, where := range slices.Sorted(maps.Keys(refs)) {
		r := refs[where]
		// Labels: every matcher and grouping label exists on the metrics of the query.
		allowed := slices.Clone(targetLabels)
		for _, s := range r.Selectors {
			var have []string
			if m := strings.HasPrefix(s.Metric, "kminion_"); m {
				have = kminionMetrics[s.Metric]
			} else {
				for l := range e.labels[e.family(s.Metric)] {
					have = append(have, l)
				}
			}
			for _, l := range s.Labels {
				require.True(t, slices.Contains(have, l) || slices.Contains(targetLabels, l),
					"%s: %s has no label %q (labels: %v)", where, s.Metric, l, have)
			}
			allowed = append(allowed, have...)
		}
		for _, l := range r.Grouping {
			require.Contains(t, allowed, l, "%s groups by %q, which none of its metrics has", where, l)
		}
		// rate() and increase() only over counters and histogram series.
		for _, m := range regexp.MustCompile(`\b(?:rate|irate|increase)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`).FindAllStringSubmatch(queries[where], -1) {
			name := m[1]
			if strings.HasPrefix(name, "kminion_") {
				continue
			}
			fam := e.family(name)
			ok := e.types[fam] == "counter" || fam != name && (e.types[fam] == "histogram" || e.types[fam] == "summary")
			require.True(t, ok, "%s: %s over %s, a %s: rate and increase are for counters", where, m[0], name, e.types[fam])
		}
	}
	t.Logf("the dashboard's %d queries read %d kreplay metrics, all exposed: %s", len(queries), len(kreplayNames), strings.Join(kreplayNames, ", "))
}

// The state panel names every lifecycle state kreplay has.
func TestDashboardStatePanelMapsEveryState(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	var texts []string
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "kreplay_replay_state") || p.Type != "state-timeline" {
				continue
			}
			for _, m := range p.FieldConfig.Defaults.Mappings {
				for value, o := range m.Options {
					texts = append(texts, o.Text)
					require.Contains(t, tg.Expr, fmt.Sprintf(`state="%s"`, o.Text), "panel %q maps %s to %s, which its query does not produce", p.Title, value, o.Text)
					require.Regexp(t, fmt.Sprintf(`state="%s"[^*]*\* %s\b`, o.Text, value), tg.Expr, "panel %q: %s is not encoded as %s", p.Title, o.Text, value)
				}
			}
		}
	}
	require.NotEmpty(t, texts, "no state-timeline panel over kreplay_replay_state")
	for _, s := range store.States {
		require.Contains(t, texts, string(s), "the state panel does not show state %s", s)
	}
}
