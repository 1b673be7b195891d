package conductor

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// A body read within the large bodies' budget takes room as its bytes
// arrive, past its free bytes, and fails once the budget has none; its
// release gives back what it took, and a second release nothing more.
func TestBodyBudget_TakenAsBytesArrive(t *testing.T) {
	t.Parallel()
	var b bodyBudget
	small := b.reader(bytes.NewReader(make([]byte, 1000)), 1000)
	_, err := io.ReadAll(small)
	require.NoError(t, err)
	require.Zero(t, b.held, "a body within its free bytes takes nothing")

	big := b.reader(bytes.NewReader(make([]byte, 3*largeBodyStep+1)), 1000)
	_, err = io.ReadAll(big)
	require.NoError(t, err)
	require.Equal(t, int64(3*largeBodyStep), b.held, "a step at a time, as read past the free bytes")

	b.held += largeBodyBudget - 4*largeBodyStep // room for one more step
	over := b.reader(bytes.NewReader(make([]byte, 3*largeBodyStep)), 0)
	_, err = io.ReadAll(over)
	require.ErrorIs(t, err, errBodyBudget)
	require.Equal(t, int64(largeBodyBudget), b.held, "it took the last step, then was refused")
	over.release()
	over.release()
	require.Equal(t, int64(largeBodyBudget-largeBodyStep), b.held, "it gave back the step it took, once")
	big.release()
	require.Equal(t, int64(largeBodyBudget-4*largeBodyStep), b.held)
}
