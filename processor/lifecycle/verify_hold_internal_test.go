package lifecycle

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/store"
)

// A version that has not claimed a partition of a topic it consumes is at offset 0 there: it has
// not reached a target above 0 (verify waits for it instead of comparing and aligning again in a
// loop). A topic it does not consume (--topics) is not waited for.
func TestCompareToHoldCountsAnUnclaimedPartitionAsOffsetZero(t *testing.T) {
	cp := func(topic string, p int32, next int64) store.Checkpoint {
		return store.Checkpoint{Topic: topic, Partition: p, NextOffset: next}
	}
	target := store.Hold{"a": {0: 5, 1: 3}, "b": {0: 2}}
	v1 := []store.Checkpoint{cp("a", 0, 5), cp("a", 1, 3), cp("b", 0, 2)}
	require.Equal(t, holdReached, compareToHold(target, v1))
	require.Equal(t, holdPending, compareToHold(target, v1, []store.Checkpoint{cp("a", 0, 5), cp("b", 0, 2)}), "a[1] not claimed yet")
	require.Equal(t, holdReached, compareToHold(target, v1, []store.Checkpoint{cp("a", 0, 5), cp("a", 1, 3)}), "it does not consume b")
	require.Equal(t, holdPassed, compareToHold(target, []store.Checkpoint{cp("a", 0, 6)}))
	require.Equal(t, holdPassed, compareToHold(target, []store.Checkpoint{cp("c", 0, 1)}), "a partition claimed after the target was set")
}
