package conductor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCompareMark(t *testing.T) {
	t.Parallel()
	mark := func(first, last, msgs uint64) streamMark {
		return streamMark{FirstSeq: first, LastSeq: last, Msgs: msgs}
	}
	for _, tc := range []struct {
		name     string
		was, now streamMark
		rebuilt  bool
		lost     uint64 // 0: nothing lost
	}{
		{"same", mark(1, 20, 20), mark(1, 20, 20), true, 0},
		{"grew after a crash", mark(1, 20, 20), mark(1, 30, 12), false, 0},
		{"tail cut", mark(1, 20, 20), mark(1, 15, 15), false, 5},
		{"tail cut, rebuilt", mark(1, 20, 20), mark(1, 15, 15), true, 5},
		{"emptied by a cut", mark(5, 20, 16), mark(0, 0, 0), true, 20},
		{"head expired while stopped", mark(1, 20, 20), mark(8, 20, 13), true, 0},
		{"head expired, gaps kept", mark(1, 20, 10), mark(8, 20, 6), true, 0},
		{"inside lost, rebuilt", mark(1, 20, 20), mark(1, 20, 10), true, 10},
		{"acked after the checkpoint, files intact", mark(1, 20, 20), mark(1, 20, 10), false, 0},
		{"head expired and inside lost", mark(1, 20, 20), mark(5, 20, 6), true, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ok := compareMark(tc.was, tc.now, tc.rebuilt)
			require.Equal(t, tc.lost != 0, ok, l.Detail)
			require.Equal(t, tc.lost, l.Msgs)
		})
	}
}
