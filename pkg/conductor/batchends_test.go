package conductor

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBatchEnds(t *testing.T) {
	t.Parallel()
	e := batchEnds{batches: map[string]*batchCount{}}
	e.mark("b")
	require.Equal(t, []string{"b"}, e.take(), "a batch of unknown total is checked")
	e.mark("b") // ended during the check
	e.settle("b", 4, 1)
	require.Empty(t, e.take(), "2 of 4 ended: no check")
	e.mark("b")
	require.Empty(t, e.take())
	e.mark("b")
	require.Equal(t, []string{"b"}, e.take(), "the events reach the total: check")
	e.settle("b", 4, 3) // one job's event came before its state: not ended yet
	require.Empty(t, e.take())
	e.mark("b")
	require.Equal(t, []string{"b"}, e.take())
	e.forget("b")
	require.Empty(t, e.batches)

	e.check("c") // at start
	require.Equal(t, []string{"c"}, e.take())
	e.settle("c", 2, 2) // all ended by the time of settling: check again
	require.Equal(t, []string{"c"}, e.take())
}

// TestBatchEnds_ForeignBounded: a host's ends may name batches as they
// like; those found with no record are held maxForeign at most, the
// others forgotten at once, and the count follows what is held.
func TestBatchEnds_ForeignBounded(t *testing.T) {
	t.Parallel()
	e := batchEnds{batches: map[string]*batchCount{}}
	for i := range maxForeign + 50 {
		id := fmt.Sprint("f", i)
		e.mark(id)
		e.foreign(id)
	}
	require.Len(t, e.batches, maxForeign)
	require.Equal(t, maxForeign, e.foreignN)
	e.forget("f0")
	require.Equal(t, maxForeign-1, e.foreignN)
	e.mark("real")
	require.Contains(t, e.take(), "real", "a batch with a record is still checked")
}
