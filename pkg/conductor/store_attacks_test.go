package conductor_test

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// TestRoles_HostTakesNoIdOfAnotherType: an idempotent job's id is
// client.IdempotentID(namespace, type, key), which anyone can compute. h1
// (squares) may not create, through conductord, a state of its own type
// under the id that type "other"'s job with key "order-42" will have: a
// first state must name its job's message. The real submission then
// queues the job.
func TestRoles_HostTakesNoIdOfAnotherType(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	h1, _ := rc.connectAs(t, "h1")
	sp, _ := subject.New("default")
	svc := hostsvc.NewCaller(h1, sp)
	id := client.IdempotentID("default", "other", "order-42")
	forged, _ := json.Marshal(map[string]any{"id": id, "type": "squares", "status": "succeeded", "result": 666})
	_, err := svc.Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreCreate, Key: id, Data: forged})
	squatted := err == nil

	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	got, err := rootc.Submit(t.Context(), "other", 1, client.WithIdempotencyKey("order-42"))
	require.NoError(t, err)
	require.Equal(t, id, got)
	j, err := rootc.Job(t.Context(), id)
	require.NoError(t, err)
	t.Logf("squatted=%v; the submitted job of type other reads: type=%s status=%s result=%s", squatted, j.Type, j.Status, j.Result)
	require.False(t, squatted, "h1 (squares) created a state under another type's job id")
	require.Equal(t, "other", j.Type)
	require.Equal(t, client.StatusQueued, j.Status)
}

// TestHostsvc_FinalStateNotRewritten: a squares job is cancelled by an
// admin (conductord writes its final state, "cancelled"). h1, a host of
// squares that never took the job, learns the state's revision (a small
// stream sequence, guessable) and asks conductord's store to write, at
// that revision, "succeeded" with a result of its choosing. No write
// replaces a final state (docs/reliability.md), whoever the writer: the
// store refuses it, and the job still reads "cancelled".
func TestHostsvc_FinalStateNotRewritten(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	id, err := rootc.Submit(t.Context(), "squares", 7)
	require.NoError(t, err)
	_, err = rootc.Cancel(t.Context(), id)
	require.NoError(t, err)
	j, err := rootc.Job(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)

	sp, _ := subject.New("default")
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	kv, err := rjs.KeyValue(t.Context(), sp.StateBucket())
	require.NoError(t, err)
	e, err := kv.Get(t.Context(), id)
	require.NoError(t, err)

	h1, _ := rc.connectAs(t, "h1")
	forged, _ := json.Marshal(map[string]any{"id": id, "type": "squares", "status": "succeeded", "attempts": 1, "result": 666})
	_, err = hostsvc.NewCaller(h1, sp).Store(t.Context(), "squares", wire.StoreItem{Op: wire.StoreState, Key: id, Rev: e.Revision(), Data: forged})
	require.ErrorContains(t, err, "has ended", "h1 replaced the final (cancelled) state of a job it never held")
	j, err = rootc.Job(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusCancelled, j.Status)
	require.Empty(t, j.Result)
}
