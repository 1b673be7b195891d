package wire

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseLogSeq: a header value of any host either reads as one LogSeq
// makes, the same back, or is refused.
func FuzzParseLogSeq(f *testing.F) {
	for _, s := range []string{LogSeq("9f2c", 0), LogSeq("e", 1<<63), "", ".", "a.", ".1", "a.b", "a.1.2", "a.-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		epoch, seq, ok := ParseLogSeq(v)
		if !ok {
			return
		}
		require.NotEmpty(t, epoch)
		e2, s2, ok := ParseLogSeq(LogSeq(epoch, seq))
		require.True(t, ok)
		require.Equal(t, epoch, e2)
		require.Equal(t, seq, s2)
	})
}
