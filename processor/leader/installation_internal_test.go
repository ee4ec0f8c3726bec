package leader

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kreplay/kreplay/processor/control"
)

func announced(catalog string, since int64, takeOver bool) control.Announcement {
	a := control.Announcement{CatalogID: catalog, TakeOver: takeOver}
	if since >= 0 {
		a.Since = &since
	}
	return a
}

// The catalog that holds the topics is decided by the claims in offset order: the first one
// holds them, a later claim of another catalog changes nothing unless it takes them over, and a
// repeated announcement counts where its claim was, so that the compacted topic (each catalog's
// latest announcement only) decides the same.
func TestHolderByClaimOrder(t *testing.T) {
	t.Parallel()
	var h holders
	_, ok := h.holder()
	require.False(t, ok, "nobody claimed the topics")

	h.add(10, announced("a", -1, false)) // two newcomers: a's claim comes first
	h.add(11, announced("b", -1, false))
	held, ok := h.holder()
	require.True(t, ok)
	require.Equal(t, claim{since: 10, catalog: "a"}, held)

	h.add(20, announced("a", 10, false)) // a's leader repeats its announcement
	held, _ = h.holder()
	require.Equal(t, "a", held.catalog)

	h.add(25, announced("c", -1, true))  // c takes the topics over
	h.add(26, announced("a", 10, false)) // a repeats once more before it sees that
	held, _ = h.holder()
	require.Equal(t, claim{since: 25, catalog: "c", takeOver: true}, held)

	// The same log once compacted: each catalog's latest record only.
	var compacted holders
	compacted.add(11, announced("b", -1, false))
	compacted.add(26, announced("a", 10, false))
	compacted.add(40, announced("c", 25, true))
	held, _ = compacted.holder()
	require.Equal(t, "c", held.catalog)

	// Without the take-over, b's losing claim never wins over a's repeated announcements.
	var lost holders
	lost.add(11, announced("b", -1, false))
	lost.add(500, announced("a", 10, false))
	held, _ = lost.holder()
	require.Equal(t, "a", held.catalog)

	// A Since past the record's own offset is not believed.
	var bogus holders
	bogus.add(5, announced("a", -1, false))
	bogus.add(6, announced("b", 900, false))
	held, _ = bogus.holder()
	require.Equal(t, "a", held.catalog)
}
