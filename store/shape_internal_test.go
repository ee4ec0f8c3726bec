package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Which changes of a view's columns are breaking: only columns appended at the end are not.
func TestDiffColumns(t *testing.T) {
	t.Parallel()
	col := func(name, typ string) Column { return Column{Name: name, Type: typ} }
	a, b, c := col("a", "text"), col("b", "bigint"), col("c", "integer")
	for _, tc := range []struct {
		name     string
		old, cur []Column
		want     ShapeChange
		breaking bool
	}{
		{"same", []Column{a, b}, []Column{a, b}, ShapeChange{}, false},
		{"appended", []Column{a, b}, []Column{a, b, c}, ShapeChange{Added: []Column{c}}, false},
		{"inserted before others: they move", []Column{a, b}, []Column{a, c, b},
			ShapeChange{Added: []Column{c}, Moved: []ColumnMove{{Name: "b", From: 2, To: 3}}}, true},
		{"removed at the end", []Column{a, b, c}, []Column{a, b}, ShapeChange{Removed: []Column{c}}, true},
		{"removed in the middle", []Column{a, b, c}, []Column{a, c},
			ShapeChange{Removed: []Column{b}, Moved: []ColumnMove{{Name: "c", From: 3, To: 2}}}, true},
		{"retyped", []Column{a, b}, []Column{a, col("b", "numeric")},
			ShapeChange{Retyped: []ColumnRetype{{Name: "b", From: "bigint", To: "numeric"}}}, true},
		{"collation", []Column{a}, []Column{col("a", `text COLLATE "C"`)},
			ShapeChange{Retyped: []ColumnRetype{{Name: "a", From: "text", To: `text COLLATE "C"`}}}, true},
		{"swapped", []Column{a, b}, []Column{b, a},
			ShapeChange{Moved: []ColumnMove{{Name: "a", From: 1, To: 2}, {Name: "b", From: 2, To: 1}}}, true},
	} {
		got := diffColumns(ShapeChange{}, tc.old, tc.cur)
		require.Equal(t, tc.want, got, tc.name)
		require.Equal(t, tc.breaking, got.Breaking(), tc.name)
	}
	require.True(t, ShapeChange{Dropped: true}.Breaking())
	require.False(t, ShapeChange{Created: true, Added: []Column{a}}.Breaking())
}
