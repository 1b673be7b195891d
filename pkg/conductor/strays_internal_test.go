package conductor

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

func TestStrayVerdict(t *testing.T) {
	t.Parallel()
	job := func(s wire.Status) *wire.Job { return &wire.Job{Status: s} }
	for _, tc := range []struct {
		name        string
		st          *wire.Job
		holderAlive bool
		want        strayAction
	}{
		{"succeeded: a leftover", job(wire.StatusSucceeded), false, strayDelete},
		{"dead: a leftover", job(wire.StatusDead), false, strayDelete},
		{"cancelled: a leftover", job(wire.StatusCancelled), false, strayDelete},
		{"ended, whoever holds it", job(wire.StatusSucceeded), true, strayDelete},
		{"queued, no other message", job(wire.StatusQueued), false, strayRequeue},
		{"running, held by an attempt of this message", job(wire.StatusRunning), false, strayRequeue},
		{"failed, its retry never to come", job(wire.StatusFailed), false, strayRequeue},
		{"running, held by another message of the job", job(wire.StatusRunning), true, strayDelete},
		{"no state: a job published without one", nil, false, strayRequeue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, strayVerdict(tc.st, tc.holderAlive))
		})
	}
}

// A stray of a job that has not ended is published again only through a
// claim of the state as it was read: a state written since (a newer
// attempt) makes the claim fail, and nothing changes; with the state read
// again, the job is claimed, published again with the claim's revision
// and Conductor-Requeued, and the stray removed.
func TestStrayRepair_RequeueNeverOverwritesANewerState(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	r := c.strays

	id, err := c.client.Submit(ctx, "later", 1)
	require.NoError(t, err)
	stream, err := c.js.Stream(ctx, c.space.JobStream())
	require.NoError(t, err)
	m, err := stream.GetMsg(ctx, 1)
	require.NoError(t, err)
	st, rev, err := r.state(ctx, id)
	require.NoError(t, err)
	require.Equal(t, wire.StatusQueued, st.Status)

	newer := *st
	newer.Status, newer.Holder = wire.StatusRunning, wire.ClaimOver(rev, 1, "newer").String()
	data, err := json.Marshal(&newer)
	require.NoError(t, err)
	newerRev, err := r.kv.Update(ctx, id, data, rev)
	require.NoError(t, err)

	err = r.requeue(ctx, stream, m, id, st, rev)
	require.ErrorIs(t, err, jetstream.ErrKeyRevisionMismatch)
	e, err := r.kv.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, newerRev, e.Revision(), "the newer state stays")
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs, "no copy published")

	st, rev, err = r.state(ctx, id)
	require.NoError(t, err)
	require.NoError(t, r.requeue(ctx, stream, m, id, st, rev))
	e, err = r.kv.Get(ctx, id)
	require.NoError(t, err)
	var claimed wire.Job
	require.NoError(t, json.Unmarshal(e.Value(), &claimed))
	require.Equal(t, wire.StatusQueued, claimed.Status)
	require.Equal(t, wire.ClaimOver(rev, 0, strayTag), wire.ParseHolder(claimed.Holder))
	_, err = stream.GetMsg(ctx, 1)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "the stray is removed")
	cp, err := stream.GetMsg(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, m.Subject, cp.Subject)
	require.Equal(t, m.Data, cp.Data)
	require.Equal(t, id, cp.Header.Get(names.HeaderJobID))
	require.Equal(t, id+"-stray-1", cp.Header.Get(names.HeaderMsgID))
	require.Equal(t, "1", cp.Header.Get(names.HeaderRequeued))
	require.Equal(t, strconv.FormatUint(e.Revision(), 10), cp.Header.Get(names.HeaderStateRev))
}

// A stray of a job with no state at all is queued again only while it is
// young: one older than half the retention may be of a job that ended
// long ago and whose state has expired since; it is removed, not run
// again.
func TestStrayRepair_OldStrayWithNoStateIsRemoved(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	r := c.strays
	stream, err := c.js.Stream(ctx, c.space.JobStream())
	require.NoError(t, err)
	for range 2 {
		_, err := c.js.Publish(ctx, c.space.Job("later"), []byte("1")) // no state, id seq-N
		require.NoError(t, err)
	}

	young, err := stream.GetMsg(ctx, 1)
	require.NoError(t, err)
	var p strayPass
	r.repair(ctx, stream, young, &p)
	require.Equal(t, strayPass{requeued: 1, requeuedJobs: []string{"seq-1"}}, p, "young: queued again")

	old, err := stream.GetMsg(ctx, 2)
	require.NoError(t, err)
	old.Time = time.Now().Add(-r.retention)
	p = strayPass{}
	r.repair(ctx, stream, old, &p)
	require.Equal(t, strayPass{deleted: 1}, p, "old: removed")
	_, err = stream.GetMsg(ctx, 2)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
	_, err = r.kv.Get(ctx, "seq-2")
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "not claimed")
}
