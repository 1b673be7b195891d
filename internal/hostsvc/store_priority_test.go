package hostsvc

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestStore_HighPriorityFirstStatesInOneBurst: an honest host takes a
// burst of 250 high-priority jobs and writes their first states in one
// request: the batched proof reads their messages by the priorities'
// subjects too, each batch one read, and none is refused for reads (as
// a burst of normal ones is not).
func TestStore_HighPriorityFirstStatesInOneBurst(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 250
	var batch []byte
	for i := range n {
		id := fmt.Sprintf("hi-%d", i)
		m := nats.NewMsg(b.sp.JobAt("sq", "high"))
		m.Header.Set(names.HeaderJobID, id)
		m.Data = []byte("1")
		ack, err := b.js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
		batch = wire.AppendStoreItem(batch, wire.StoreItem{Op: wire.StoreState, Key: id, Seq: ack.Sequence, Data: stateOf(id, "sq", wire.StatusRunning)})
	}
	m, err := b.nc.Request(b.sp.StoreAs("h1", "sq"), batch, waitLimit)
	require.NoError(t, err)
	rs, err := ParseStoreAnswer(m, n)
	require.NoError(t, err)
	refused, first := 0, ""
	for i, r := range rs {
		if err := ResultError(r); err != nil {
			if refused++; first == "" {
				first = fmt.Sprintf("item %d: %v", i, err)
			}
		}
	}
	require.Zero(t, refused, "an honest burst of high-priority first states refused in part; first: %s", first)
}
