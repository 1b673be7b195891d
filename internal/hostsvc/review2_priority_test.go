package hostsvc

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestReview2_HighPriorityFirstStatesInOneBurst: an honest host takes a
// burst of 250 high-priority jobs and writes their first states in one
// request (well under wire.MaxStoreItems). Each is proved by reads of its
// own (two: the normal subject, then the priorities'), 500 reads, within
// maxReads. But the batched proof (proof.go) charges the request n reads
// first and then finds none of them (it reads the normal subject only),
// so the burst is charged 750 and its last items are refused: a
// regression for high and low priority jobs that normal ones do not have.
func TestReview2_HighPriorityFirstStatesInOneBurst(t *testing.T) {
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
