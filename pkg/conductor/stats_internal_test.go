package conductor

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// The unacked sequences the stats keep stay within statsMaxUnacked however
// many ends come faster than their acks settle (100 busy types passed the
// old bound of 4,096 at about 1,100 ends a second, and each ends message
// then sorted them all and logged a warning): the oldest are dropped in
// bulk, the newest kept, and the drops logged once, not with each end.
func TestStats_UnackedBoundedWithoutALogFlood(t *testing.T) {
	var out bytes.Buffer // the stats log from the caller's goroutine
	s := &stats{
		log:     slog.New(slog.NewTextHandler(&out, nil)),
		byType:  map[string]counts{},
		saved:   map[string]counts{},
		unacked: map[string]map[uint64]time.Time{},
		revs:    map[string]uint64{},
		dirty:   map[string]bool{},
	}
	const n = 3 * statsMaxUnacked
	most := 0
	for seq := uint64(1); seq <= n; seq++ {
		typ := fmt.Sprintf("t%02d", seq%100)
		require.True(t, s.countEnds(seq, wire.Ends{Type: typ, Jobs: []wire.End{{ID: "j", Status: wire.StatusSucceeded}}}))
		most = max(most, s.unackedLen())
	}
	require.LessOrEqual(t, most, statsMaxUnacked, "the sequences kept stay bounded")
	require.Equal(t, s.unackedLen(), countKept(s), "the count kept is the sequences held")

	newest := wire.Ends{Type: fmt.Sprintf("t%02d", n%100), Jobs: []wire.End{{ID: "j", Status: wire.StatusSucceeded}}}
	require.False(t, s.countEnds(n, newest), "the newest end is known counted: not counted again")
	oldest := wire.Ends{Type: "t01", Jobs: []wire.End{{ID: "j", Status: wire.StatusSucceeded}}}
	require.True(t, s.countEnds(1, oldest), "the oldest was forgotten: counted again, as the log warns")

	total := uint64(0)
	for _, c := range s.byType {
		total += c.Succeeded
	}
	require.Equal(t, uint64(n+1), total)
	require.Equal(t, 1, strings.Count(out.String(), "are too many"), "the drops are logged once a minute, not with each end:\n%s", out.String())

	// Acks settled and the ack floor drop sequences; the count follows.
	s.ackedTo(n - 100)
	require.Equal(t, s.unackedLen(), countKept(s))
	require.Less(t, s.unackedLen(), 200)
}

// countKept counts the sequences s holds, type by type.
func countKept(s *stats) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := 0
	for _, seqs := range s.unacked {
		k += len(seqs)
	}
	return k
}
