package topology

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// codeConfig is a config with one projection whose handlers are Go code.
func codeConfig(t *testing.T, version string, types ...string) *Config {
	t.Helper()
	c, err := Parse([]byte("sources:\n  - topic: bank.accounts\n"))
	require.NoError(t, err)
	c.Projections = append(c.Projections, Projection{
		Name: "balances", Sources: []string{"bank.accounts"},
		Tables: []string{"CREATE TABLE balances (account_id text PRIMARY KEY, total bigint NOT NULL)"},
		Checks: []string{"SELECT count(*) FROM balances"},
		Code:   &Code{Version: version, EventTypes: types},
	})
	c.SetDefaults()
	return c
}

// A code projection's definition records its code version and event types; the version is in
// the hash (a code change rolled out under a new version is a new definition), and a definition
// without code hashes as it always did.
func TestCodeDefinitionAndHash(t *testing.T) {
	t.Parallel()
	c := codeConfig(t, "1", "MoneyWithdrawn", "MoneyDeposited")
	require.NoError(t, c.Validate())
	d, err := c.Definition("balances")
	require.NoError(t, err)
	require.Equal(t, &Code{Version: "1", EventTypes: []string{"MoneyDeposited", "MoneyWithdrawn"}}, d.Code, "event types sorted")
	require.Empty(t, d.Handlers)
	require.NoError(t, d.Validate())
	require.True(t, d.HandlesType("MoneyDeposited"))
	require.False(t, d.HandlesType("AccountOpened"))
	require.Equal(t, []string{"MoneyDeposited", "MoneyWithdrawn"}, d.HandledTypes())

	// The snapshot as the catalog stores it reads back equal.
	b, err := json.Marshal(d)
	require.NoError(t, err)
	require.Contains(t, string(b), `"code":{"version":"1","event_types":["MoneyDeposited","MoneyWithdrawn"]}`)
	var back Definition
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, d, back)
	require.Equal(t, d.Hash(), back.Hash())

	v2, err := codeConfig(t, "2", "MoneyDeposited", "MoneyWithdrawn").Definition("balances")
	require.NoError(t, err)
	require.NotEqual(t, d.Hash(), v2.Hash(), "a new code version is a new definition")
	same, err := codeConfig(t, "1", "MoneyDeposited", "MoneyWithdrawn").Definition("balances")
	require.NoError(t, err)
	require.Equal(t, d.Hash(), same.Hash(), "the order the handlers were given in does not matter")

	// A definition without code has no "code" key: the hashes of SQL projections are unchanged.
	sql := Definition{Projection: "p", Ordering: OrderingGlobal, OnError: OnErrorFail}
	b, err = json.Marshal(sql)
	require.NoError(t, err)
	require.NotContains(t, string(b), "code")
}

func TestCodeProjectionValidation(t *testing.T) {
	t.Parallel()
	c := codeConfig(t, "", "MoneyDeposited", "MoneyDeposited", " ")
	c.Projections[0].Handlers = map[string]string{"X": "SELECT 1"}
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{
		`projection "balances": a projection with Go handlers (a projector) has no SQL handlers or folds`,
		`projection "balances": code version is empty; set the projector's Version`,
		`projection "balances": handler "MoneyDeposited" is listed twice`,
		`projection "balances": handler " ": blank event type`,
	} {
		require.ErrorContains(t, err, want)
	}
	require.ErrorContains(t, codeConfig(t, "v 2", "A").Validate(), `code version "v 2" has a space`)
	require.ErrorContains(t, codeConfig(t, "2").Validate(), `handlers: none; give the projector a Go handler`)
}
