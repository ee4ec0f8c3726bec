package main

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/kreplay/kreplay/processor/control"
	"github.com/stretchr/testify/require"
)

// lagJSONFields are the fields of `kreplay lag KEY -o json`: the `-o json` fields the README
// documents, the version's partitions and when the status was computed.
var lagJSONFields = []string{"key", "projection", "state", "live", "applied_events", "progress", "eta_seconds",
	"lag_events", "lag_seconds", "error", "partitions", "updated_at"}

func jsonKeys(t *testing.T, m map[string]any) []string {
	t.Helper()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestLagJSONHasTheDocumentedFields(t *testing.T) {
	t.Parallel()
	eta := 12.5
	st := control.Status{Key: "stock_v2", Projection: "stock", State: "replaying", Live: false, LiveVersion: "stock_v1",
		AppliedEvents: 2000, Progress: 0.25, ETASeconds: &eta, LagEvents: 30, LagSeconds: 1.5, Error: "",
		Rate: 100, DefinitionHash: "abc", Partitions: []control.PartitionStatus{
			{Topic: "stock.moves", Partition: 0, NextOffset: 1000, TargetOffset: 990, HighWatermark: 1010, Lag: 10},
		}, UpdatedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	js, err := json.Marshal(lagOf(st))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(js, &m))
	want := slices.Clone(lagJSONFields)
	slices.Sort(want)
	require.Equal(t, want, jsonKeys(t, m), "lag -o json: %s", js)
	require.Equal(t, "stock_v2", m["key"])
	require.Equal(t, "stock", m["projection"])
	require.Equal(t, "replaying", m["state"])
	require.Equal(t, false, m["live"])
	require.EqualValues(t, 2000, m["applied_events"])
	require.EqualValues(t, 0.25, m["progress"])
	require.EqualValues(t, 12.5, m["eta_seconds"])
	require.EqualValues(t, 30, m["lag_events"])
	require.EqualValues(t, 1.5, m["lag_seconds"])
	require.Equal(t, "", m["error"])
	require.Len(t, m["partitions"], 1)
	require.Equal(t, "2026-03-01T12:00:00Z", m["updated_at"])

	// Unknown ETA and no partitions: null and [], as status -o json has them.
	js, err = json.Marshal(lagOf(control.Status{Key: "stock_v1", State: "failed", Error: "boom"}))
	require.NoError(t, err)
	m = nil
	require.NoError(t, json.Unmarshal(js, &m))
	require.Contains(t, m, "eta_seconds")
	require.Nil(t, m["eta_seconds"])
	require.Equal(t, []any{}, m["partitions"])
	require.Equal(t, "boom", m["error"])
}

// `kreplay lag KEY -o json` against a serve prints the documented fields with the values
// `status KEY -o json` has for them.
func TestLagJSONAgainstServe(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.produce(300)
	e.serveInProcess()
	e.waitCaughtUp("balances_v1")

	var lag statusJSON
	require.NoError(t, json.Unmarshal([]byte(e.mustCLI("lag", "balances_v1", "-o", "json")), &lag))
	want := slices.Clone(lagJSONFields)
	slices.Sort(want)
	require.Equal(t, want, jsonKeys(t, lag))
	require.Equal(t, "balances_v1", lag.str("key"))
	require.Equal(t, "balances", lag.str("projection"))
	require.Equal(t, "live", lag.str("state"))
	require.Equal(t, true, lag["live"])
	require.EqualValues(t, 300, lag.num("applied_events"))
	require.EqualValues(t, 1, lag.num("progress"))
	require.EqualValues(t, 0, lag.num("lag_events"))
	require.Equal(t, "", lag.str("error"))
	require.Len(t, lag["partitions"], 4)
}
