package processor_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/internal/bankgen"
	"github.com/kreplay/kreplay/processor"
)

// assignmentsJSON is GET /api/assignments decoded loosely, so that the test checks the JSON
// contract's field names rather than Go's.
type assignmentsJSON struct {
	Instance   string                      `json:"instance"`
	Leader     bool                        `json:"leader"`
	Versions   map[string]int              `json:"versions"`
	Partitions map[string]map[string][]int `json:"partitions"`
}

func getAssignments(t *testing.T, p *processor.Processor) assignmentsJSON {
	t.Helper()
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/assignments", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &raw), rec.Body.String())
	for _, k := range []string{"instance", "leader", "versions", "partitions"} {
		require.Contains(t, raw, k, "GET /api/assignments: %s", rec.Body.String())
	}
	var a assignmentsJSON
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &a))
	return a
}

// GET /api/assignments lists, per version running on the instance, the topics and partitions it
// consumes (and their count): all of them on the owner of a global-ordered version, none on a
// standby instance.
func TestAPIAssignmentsListsTheConsumedPartitions(t *testing.T) {
	t.Parallel()
	const topic = "bank.accounts"
	b := setup(t, map[string]int32{topic: 4})
	bank := bankgen.New(topic, 4, 50, 3)
	b.kafka.Produce(bank.Events(400)...)
	cfg := b.config(bankgen.Config(topic, 4, "global", false))
	one := b.start(cfg)
	eventually(t, 60*time.Second, func() bool { return b.caughtUp("balances_v1", topic) }, "balances_v1 did not catch up")

	var a assignmentsJSON
	eventually(t, 30*time.Second, func() bool {
		a = getAssignments(t, one.p)
		return a.Leader && a.Versions["balances_v1"] == 4
	}, "the only instance should lead and consume the 4 partitions: %+v", a)
	require.NotEmpty(t, a.Instance)
	require.Equal(t, map[string][]int{topic: {0, 1, 2, 3}}, a.Partitions["balances_v1"])

	// A second instance joins the group and stands by: a global-ordered version stays in one place.
	two := b.start(b.config(bankgen.Config(topic, 4, "global", false)))
	var a1, a2 assignmentsJSON
	eventually(t, 60*time.Second, func() bool {
		a1, a2 = getAssignments(t, one.p), getAssignments(t, two.p)
		_, running := a2.Versions["balances_v1"]
		return running && a1.Versions["balances_v1"]+a2.Versions["balances_v1"] == 4 &&
			(a1.Versions["balances_v1"] == 0 || a2.Versions["balances_v1"] == 0)
	}, "one instance should own the 4 partitions: %+v / %+v", a1, a2)
	require.NotEqual(t, a1.Leader, a2.Leader, "exactly one instance leads")
	owner, standby := a1, a2
	if a2.Versions["balances_v1"] == 4 {
		owner, standby = a2, a1
	}
	require.Equal(t, map[string][]int{topic: {0, 1, 2, 3}}, owner.Partitions["balances_v1"])
	require.Equal(t, map[string][]int{}, standby.Partitions["balances_v1"])
	require.NoError(t, two.stop())
	require.NoError(t, one.stop())
}
