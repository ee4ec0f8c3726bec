package control_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor/control"
)

// A command names the installation it addresses and its deadline; without a deadline it
// expires DefaultTTL after it was issued (or recorded).
func TestCommandDeadline(t *testing.T) {
	t.Parallel()
	c, err := control.ParseCommand([]byte(`{"id":"c1","command":"pause","replay":"b_v2","installation":"shop",
		"issued_at":"2026-11-23T10:00:00Z","deadline":"2026-11-23T10:01:30Z"}`))
	require.NoError(t, err)
	require.Equal(t, "shop", c.Installation)
	require.Equal(t, time.Date(2026, 11, 23, 10, 1, 30, 0, time.UTC), c.Expires(time.Now()).UTC())

	c, err = control.ParseCommand([]byte(`{"id":"c2","command":"pause","replay":"b_v2","issued_at":"2026-11-23T10:00:00Z"}`))
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 23, 10, 10, 0, 0, time.UTC), c.Expires(time.Now()).UTC())

	recorded := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	c, err = control.ParseCommand([]byte(`{"id":"c3","command":"pause","replay":"b_v2"}`))
	require.NoError(t, err)
	require.Equal(t, recorded.Add(10*time.Minute), c.Expires(recorded), "no issued_at: the record's timestamp")

	_, err = control.ParseCommand([]byte(`{"id":"c4","command":"pause","replay":"b_v2","deadline":"soon"}`))
	require.ErrorContains(t, err, "not a command")
}

// cancel names the command it cancels in its options, and nothing else.
func TestParseCancel(t *testing.T) {
	t.Parallel()
	c, err := control.ParseCommand([]byte(`{"id":"k1","command":"cancel","options":{"command_id":"c1"}}`))
	require.NoError(t, err)
	target, err := control.CancelTarget(c)
	require.NoError(t, err)
	require.Equal(t, "c1", target)
	require.Equal(t, "cancel c1", control.Describe(c))

	for value, want := range map[string]string{
		`{"id":"k2","command":"cancel"}`:                                    `cancel needs "options": {"command_id"`,
		`{"id":"k3","command":"cancel","options":{"command_id":" "}}`:       `cancel needs "options": {"command_id"`,
		`{"id":"k4","command":"cancel","options":{"id":"c1"}}`:              `unknown field "id"`,
		`{"id":"k5","command":"cancel","options":{"command_id":"c\u0001"}}`: "control character",
	} {
		_, err := control.ParseCommand([]byte(value))
		require.ErrorContains(t, err, want, value)
	}
}
