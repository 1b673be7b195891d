package hostsvc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// TestStore_NoCreateOverAnotherTypesJob: a job of type "other" ends;
// its final state's TTL runs out (it is in conductord's archive then),
// leaving a marker. A host of type "sq" may not create a state under that
// job's id (op c, or op s at the marker's revision): a write that finds no
// state of a type must name the job's message, of its own type.
func TestStore_NoCreateOverAnotherTypesJob(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	c := &Caller{nc: b.nc, sp: b.sp, id: "h1", making: make(chan struct{}, makingAtOnce)}

	_, err := b.states.Create(ctx, "o1", stateOf("o1", "other", wire.StatusSucceeded), jetstream.KeyTTL(time.Second))
	require.NoError(t, err)
	_, err = b.states.Create(ctx, "o2", stateOf("o2", "other", wire.StatusSucceeded))
	require.NoError(t, err)
	require.NoError(t, b.states.Delete(ctx, "o2")) // e.g. a submission taken back
	require.Eventually(t, func() bool {
		_, err := b.states.Get(ctx, "o1")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, waitLimit, 20*time.Millisecond, "o1's final state expires")

	// Op c over the expired one; op s at the deleted one's marker.
	_, err1 := c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "o1", Data: stateOf("o1", "sq", wire.StatusSucceeded)})
	marker, err := b.js.Stream(ctx, "KV_"+b.sp.StateBucket())
	require.NoError(t, err)
	last, err := marker.GetLastMsgForSubject(ctx, "$KV."+b.sp.StateBucket()+".o2")
	require.NoError(t, err)
	_, err2 := c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreState, Key: "o2", Rev: last.Sequence, Data: stateOf("o2", "sq", wire.StatusSucceeded)})
	assert.Error(t, err1, "h1 (sq) wrote a state under the id of an expired job of type other")
	assert.Error(t, err2, "h1 (sq) wrote a state under the id of a deleted job of type other")
}
