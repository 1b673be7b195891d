package hostsvc

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestFairQueue: requests are taken a credential at a time, in turn, so
// that a credential with many waiting holds another's up by one at most;
// a credential's bounds refuse its requests only; a closed queue takes
// nothing.
func TestFairQueue(t *testing.T) {
	t.Parallel()
	q := newFairQueue()
	msg := func(s string) *nats.Msg { return &nats.Msg{Data: []byte(s)} }
	for i := range 5 {
		require.True(t, q.put("flood", msg(string(rune('a'+i)))))
	}
	require.True(t, q.put("h2", msg("x")))
	require.True(t, q.put("h3", msg("y")))
	var order []string
	for range 7 {
		id, m, ok := q.take()
		require.True(t, ok)
		order = append(order, id+":"+string(m.Data))
	}
	require.Equal(t, []string{"flood:a", "h2:x", "h3:y", "flood:b", "flood:c", "flood:d", "flood:e"}, order)
	require.Zero(t, q.pending)
	require.Empty(t, q.byCred)

	for range credPending {
		require.True(t, q.put("flood", msg("z")))
	}
	require.False(t, q.put("flood", msg("z")), "past its credential's bound")
	require.True(t, q.put("h2", msg("x")), "another credential still waits")
	require.False(t, q.put("big", &nats.Msg{Data: make([]byte, credPendingBytes+1)}), "past its credential's bytes")

	q.close()
	require.False(t, q.put("h2", msg("x")), "closed")
	_, _, ok := q.take()
	require.False(t, ok, "the requests waiting are dropped once closed")
}
