package ratemap

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPerKey: each key has its own burst; past MaxKeys the limiters are
// forgotten rather than grown.
func TestPerKey(t *testing.T) {
	t.Parallel()
	r := &PerKey{Every: 0.001, Burst: 2}
	require.True(t, r.Allow("a"))
	require.True(t, r.AllowN("a", 1))
	require.False(t, r.Allow("a"), "a's burst is spent")
	require.True(t, r.Allow("b"), "b has its own")
	for i := range MaxKeys + 10 {
		r.Allow(fmt.Sprint("k", i))
	}
	require.LessOrEqual(t, len(r.m), MaxKeys)
}
