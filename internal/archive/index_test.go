package archive

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSegment_Search finds every entry of an index, runs of equal hashes
// (ids whose hashes collide) included, however long.
func TestSegment_Search(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 100, searchWindow, 5000, 20_000} {
		seg, err := createSegment(t.TempDir(), 0, time.Now())
		require.NoError(t, err)
		t.Cleanup(seg.release)

		rng := rand.New(rand.NewPCG(1, uint64(n)))
		var entries []indexEntry
		want := make(map[uint64][]uint32)
		add := func(h uint64, times int) {
			for range times {
				off := uint32(len(entries))
				entries = append(entries, indexEntry{h, off})
				want[h] = append(want[h], off)
			}
		}
		for range n {
			add(rng.Uint64(), 1)
		}
		add(0, 3)                                        // at the start
		add(^uint64(0), 2)                               // at the end
		add(rng.Uint64(), 2)                             // a pair
		add(rng.Uint64(), searchWindow+searchWindow/2+7) // longer than a window
		sl, err := seg.writeEntries(entries)
		require.NoError(t, err)
		seg.sealWith(sl)

		for h, offs := range want {
			got, err := seg.search(h)
			require.NoError(t, err)
			slices.Sort(got)
			require.Equal(t, offs, got, "%d entries, hash %x", n, h)
		}
		for range 1000 {
			h := rng.Uint64()
			if _, ok := want[h]; !ok {
				got, err := seg.search(h)
				require.NoError(t, err)
				require.Empty(t, got)
			}
		}
	}
}
