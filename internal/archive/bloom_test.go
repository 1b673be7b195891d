package archive

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBloom(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 1000, 100_000} {
		b := newBloom(n)
		for i := range n {
			b.add(hashID(strconv.Itoa(i)))
		}
		for i := range n {
			require.True(t, b.has(hashID(strconv.Itoa(i))))
		}
		fp := 0
		const tries = 100_000
		for i := range tries {
			if b.has(hashID("x" + strconv.Itoa(i))) {
				fp++
			}
		}
		t.Logf("%d states: %.2f%% false positives", n, 100*float64(fp)/tries)
		require.Less(t, fp, tries*2/100, "%d states", n)
	}
}
