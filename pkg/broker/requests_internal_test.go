package broker

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
)

// The session's record of kept keys: a change that comes while a get is
// in flight keeps its answer from being kept; a loss of all does the
// same for every one in flight; past keeps keys, none is tracked.
func TestSession_KeptKeys(t *testing.T) {
	t.Parallel()
	ss := &session{keeps: 2, kept: map[lookupKey]*kept{}, tracked: map[uint64]asked{}}
	k1, k2, k3 := lookupKey{"n", "k1"}, lookupKey{"n", "k2"}, lookupKey{"n", "k3"}
	drops := func() []proto.Message {
		var ms []proto.Message
		r := proto.NewReader(bytes.NewReader(ss.answers), 0)
		for {
			m, err := r.Read()
			if err != nil {
				ss.answers = nil
				return ms
			}
			ms = append(ms, m)
		}
	}

	ss.track(1, k1)
	ss.changed(k1) // while in flight
	require.False(t, ss.untrack(1, true), "a change overtook the answer")
	require.Empty(t, drops(), "nothing was kept")
	require.Empty(t, ss.kept)

	ss.track(2, k1)
	require.True(t, ss.untrack(2, true))
	ss.track(3, k2)
	ss.track(4, k3) // no room but k1's, kept: dropped for it
	require.Equal(t, []proto.Message{{Op: proto.OpDrop, Name: "n", Key: "k1"}}, drops(), "k1 made room")
	ss.track(5, k1) // no room: k2 and k3 are in flight
	require.False(t, ss.untrack(5, true), "no room: not kept")
	require.True(t, ss.untrack(4, true))
	ss.lost() // while 3 is in flight
	require.False(t, ss.untrack(3, true))
	require.Equal(t, []proto.Message{{Op: proto.OpDrop}}, drops(), "k3 was kept")
	require.Empty(t, ss.kept)

	ss.track(5, k2)
	require.False(t, ss.untrack(5, false), "not watched")
	require.Empty(t, ss.kept)
}

// The lookup actions are the channel's own.
func TestRequests_LookupActionsAreTheChannels(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{proto.LookupGet, proto.LookupSet, proto.LookupDel, proto.LookupKeys},
		[]string{LookupGet, LookupSet, LookupDel, LookupKeys})
}
