package topology

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Lanes of ordering: partition commit side by side: their default batches are shorter (see
// DefaultPartitionBatchSize); a batch_size set in the file is kept in either ordering.
func TestBatchSizeDefaultsByOrdering(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ordering Ordering
		set      int
		want     int
	}{
		{OrderingGlobal, 0, 2000},
		{"", 0, 2000},
		{OrderingPartition, 0, DefaultPartitionBatchSize},
		{OrderingPartition, 5000, 5000},
		{OrderingGlobal, 300, 300},
	} {
		c := Config{Projections: []Projection{{Name: "p", Ordering: tc.ordering, BatchSize: tc.set}}}
		c.SetDefaults()
		require.Equal(t, tc.want, c.Projections[0].BatchSize, "ordering %q, batch_size %d", tc.ordering, tc.set)
	}
	require.Equal(t, 1000, DefaultPartitionBatchSize)
}
