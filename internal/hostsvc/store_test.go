package hostsvc

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// job publishes the message of job id of type typ and returns its
// sequence: what a host's first write of its state names.
func (b *bundle) job(t *testing.T, typ, id string) uint64 {
	t.Helper()
	m := nats.NewMsg(b.sp.Job(typ))
	m.Header.Set(names.HeaderJobID, id)
	m.Data = []byte("1")
	ack, err := b.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	return ack.Sequence
}

func stateOf(id, typ string, status wire.Status) []byte {
	data, _ := json.Marshal(wire.Job{ID: id, Type: typ, Status: status})
	return data
}

// TestStore: a host's writes through conductord are checked against the
// job type of its subject: the state written, the state it replaces, and
// for a dead entry the job's state; the compare-and-set of the revision
// holds; a create passes a deleted state.
func TestStore(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	c := &Caller{nc: b.nc, sp: b.sp, id: "h1", making: make(chan struct{}, makingAtOnce)}

	j1 := b.job(t, "sq", "j1")
	_, err := c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j1", Data: stateOf("j1", "sq", wire.StatusRunning)})
	require.ErrorContains(t, err, "names no job message", "a first state without its job's message")
	other1 := b.job(t, "other", "x1")
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "x1", Seq: other1, Data: stateOf("x1", "sq", wire.StatusSucceeded)})
	require.ErrorContains(t, err, "refused", "the id of another type's job that has no state")
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "x1", Seq: j1, Data: stateOf("x1", "sq", wire.StatusSucceeded)})
	require.ErrorContains(t, err, "refused", "another job's message")
	rev, err := c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j1", Seq: j1, Data: stateOf("j1", "sq", wire.StatusRunning)})
	require.NoError(t, err)
	rev2, err := c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreState, Key: "j1", Rev: rev, TTL: time.Hour, Data: stateOf("j1", "sq", wire.StatusSucceeded)})
	require.NoError(t, err)
	require.Greater(t, rev2, rev)
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreState, Key: "j1", Rev: rev, Data: stateOf("j1", "sq", wire.StatusFailed)})
	require.ErrorIs(t, err, ErrConflict, "an old revision")
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j1", Seq: j1, Data: stateOf("j1", "sq", wire.StatusRunning)})
	require.ErrorIs(t, err, ErrConflict, "a create over a state")

	// Another type's job, a state of another type, another job's state.
	other, err := b.states.Create(ctx, "o1", stateOf("o1", "other", wire.StatusQueued))
	require.NoError(t, err)
	for name, it := range map[string]wire.StoreItem{
		"replace another type's state":  {Op: wire.StoreState, Key: "o1", Rev: other, Data: stateOf("o1", "sq", wire.StatusSucceeded)},
		"write a state of another type": {Op: wire.StoreState, Key: "o1", Rev: other, Data: stateOf("o1", "other", wire.StatusSucceeded)},
		"a state of another job":        {Op: wire.StoreCreate, Key: "j2", Seq: j1, Data: stateOf("j3", "sq", wire.StatusRunning)},
		"another job's revision":        {Op: wire.StoreState, Key: "j2", Rev: rev2, Data: stateOf("j2", "sq", wire.StatusRunning)},
		"index a job that is not dead":  {Op: wire.StoreDead, Key: "j1", Data: stateOf("j1", "sq", wire.StatusDead)},
		"index another type's job":      {Op: wire.StoreDead, Key: "o1", Data: stateOf("o1", "sq", wire.StatusDead)},
	} {
		_, err := c.Store(ctx, "sq", it)
		require.ErrorContains(t, err, "refused", name)
	}
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j2", Data: []byte("{")})
	require.ErrorContains(t, err, "not a job's state")
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "a*b", Data: stateOf("a*b", "sq", wire.StatusRunning)})
	require.ErrorContains(t, err, "job id")
	e, err := b.states.Get(ctx, "o1")
	require.NoError(t, err)
	require.Equal(t, other, e.Revision(), "the other type's state is untouched")

	// A dead job is indexed.
	dead, err := b.states.Create(ctx, "d1", stateOf("d1", "sq", wire.StatusDead))
	require.NoError(t, err)
	require.NotZero(t, dead)
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreDead, Key: "d1", Data: stateOf("d1", "sq", wire.StatusDead)})
	require.NoError(t, err)
	_, err = b.dead.Get(ctx, "d1")
	require.NoError(t, err)

	// A create past a deleted state: with the job's message only.
	require.NoError(t, b.states.Delete(ctx, "j1"))
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j1", Data: stateOf("j1", "sq", wire.StatusRunning)})
	require.ErrorContains(t, err, "names no job message")
	_, err = c.Store(ctx, "sq", wire.StoreItem{Op: wire.StoreCreate, Key: "j1", Seq: j1, Data: stateOf("j1", "sq", wire.StatusRunning)})
	require.NoError(t, err)

	// A batch that is not one: 400, and conductord still serves.
	m, err := b.nc.Request(b.sp.StoreAs("h1", "sq"), []byte("s j1 1 0 0 99\n{}"), waitLimit)
	require.NoError(t, err)
	require.Equal(t, "400", m.Header.Get(names.HeaderStatus))
	_, err = ParseStoreAnswer(m, 1)
	require.ErrorContains(t, err, "announced")
}

// TestStore_Batch: the results of a batch come in its order, each on its
// own: a refused write fails alone.
func TestStore_Batch(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var batch []byte
	for _, it := range []wire.StoreItem{
		{Op: wire.StoreState, Key: "a", Seq: b.job(t, "sq", "a"), Data: stateOf("a", "sq", wire.StatusRunning)},
		{Op: wire.StoreState, Key: "b", Seq: b.job(t, "other", "b"), Data: stateOf("b", "other", wire.StatusRunning)},
		{Op: wire.StoreState, Key: "c", Seq: b.job(t, "sq", "c"), Data: stateOf("c", "sq", wire.StatusRunning)},
	} {
		batch = wire.AppendStoreItem(batch, it)
	}
	m, err := b.nc.Request(b.sp.StoreAs("h1", "sq"), batch, waitLimit)
	require.NoError(t, err)
	rs, err := ParseStoreAnswer(m, 3)
	require.NoError(t, err)
	require.NoError(t, ResultError(rs[0]))
	require.ErrorContains(t, ResultError(rs[1]), "refused")
	require.NoError(t, ResultError(rs[2]))
	_, err = b.states.Get(context.Background(), "b")
	require.Error(t, err)

	// No inbox, no answer.
	sub, err := b.nc.SubscribeSync("elsewhere")
	require.NoError(t, err)
	require.NoError(t, b.nc.PublishRequest(b.sp.StoreAs("h1", "sq"), "elsewhere", batch))
	_, err = b.nc.Request(b.sp.CancelsOf(), nil, waitLimit)
	require.NoError(t, err)
	_, err = sub.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout)
}
