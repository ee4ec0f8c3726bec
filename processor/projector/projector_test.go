package projector_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor/projector"
	"github.com/kreplay/kreplay/store"
	"github.com/kreplay/kreplay/topology"
)

// A projector is its projection's definition with Code: the version and the handled types; each
// handler is of one style; a panic in a handler is its event's failure, not the process's.
func TestProjectorDefinitionStylesAndPanics(t *testing.T) {
	t.Parallel()
	p := &projector.Projector{
		Name: "balances", Version: "7", Sources: []string{"bank"}, Tables: []string{"CREATE TABLE t (x int)"},
		Handlers: map[string]projector.Handler{
			"B": projector.Pipelined(func(*projector.Batch, *projector.Event) error { panic("boom") }),
			"A": projector.Transactional(func(context.Context, pgx.Tx, *projector.Event) error { return nil }),
		},
	}
	require.NoError(t, p.Validate())
	pc := p.Projection()
	require.Equal(t, &topology.Code{Version: "7", EventTypes: []string{"A", "B"}}, pc.Code)
	require.Empty(t, pc.Handlers)

	code := p.CodeHandlers()
	require.Equal(t, store.CodeTransactional, code.Style("A"))
	require.Equal(t, store.CodePipelined, code.Style("B"))
	require.Equal(t, store.CodeNone, code.Style("C"))
	err := code.Queue(nil, &topology.Event{ID: "e-9", Type: "B", Offset: 9})
	require.ErrorContains(t, err, "projector balances version 7 panicked on event e-9 (offset 9): boom")

	p.Handlers["C"] = projector.Handler{}
	require.EqualError(t, p.Validate(), `projector "balances" version "7": handler "C": make it with projector.Pipelined or projector.Transactional`)
	var nilp *projector.Projector
	require.Error(t, nilp.Validate())

	r := &projector.Reactor{Name: " ", EventTypes: []string{"X", "X"}}
	err = r.Validate()
	for _, want := range []string{"Name is empty", "Projection is empty", "React is nil", `event type "X" is blank or listed twice`} {
		require.ErrorContains(t, err, want)
	}
	require.True(t, (&projector.Reactor{}).Reacts("any"))
	require.False(t, (&projector.Reactor{EventTypes: []string{"A"}}).Reacts("B"))
}
