package broker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadLines(t *testing.T) {
	t.Parallel()
	type line struct {
		text      string
		truncated bool
	}
	for _, tc := range []struct {
		name  string
		input string
		max   int
		want  []line
	}{
		{"Lines", "a\nbb\r\n\nccc", 16, []line{{"a", false}, {"bb", false}, {"", false}, {"ccc", false}}},
		{"Empty", "", 16, nil},
		{"LongLineTruncated", strings.Repeat("x", 40) + "\nok\n", 16, []line{{strings.Repeat("x", 16), true}, {"ok", false}}},
		{"LongLastLine", "ok\n" + strings.Repeat("y", 40), 16, []line{{"ok", false}, {strings.Repeat("y", 16), true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []line
			readLines(strings.NewReader(tc.input), tc.max, func(b []byte, truncated bool) {
				got = append(got, line{string(b), truncated})
			})
			require.Equal(t, tc.want, got)
		})
	}
}

func TestTail_Last(t *testing.T) {
	t.Parallel()
	var tl tail
	require.Empty(t, tl.last(5, 100))
	tl.add("one")
	require.Equal(t, "one", tl.last(5, 100))
	for i := range 30 {
		tl.add(strings.Repeat("z", i))
	}
	require.Equal(t, strings.Join([]string{
		strings.Repeat("z", 27), strings.Repeat("z", 28), strings.Repeat("z", 29),
	}, " | "), tl.last(3, 1000))
	require.Equal(t, "…"+strings.Repeat("z", 10), tl.last(3, 10))

	tl.add(strings.Repeat("é", tailLineBytes))
	got := tl.last(1, 10000)
	require.LessOrEqual(t, len(got), tailLineBytes+len("…"))
	require.True(t, strings.HasSuffix(got, "é…"))
}
