package conductor_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// TestClient_WaitIgnoresAnotherTypesEvent: a Go Client with an admin's
// credential (no FeedEnds, not a submitter) waits for a job by following
// every type's job events. h1 (squares) may publish its type's events:
// it publishes events.job.squares.succeeded naming, in its
// Conductor-Job-Id header, a queued job of type other, its body that job
// "succeeded" with h1's result. An event is a hint only: one of another
// type's subject is not taken for the job's end, and Wait returns the
// stored final state once the job really ends (here: cancelled).
func TestClient_WaitIgnoresAnotherTypesEvent(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	sp, _ := subject.New("default")
	root, _ := rc.connectAs(t, "root")
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	id, err := rootc.Submit(t.Context(), "other", 7) // queued: no host serves other
	require.NoError(t, err)

	type waited struct {
		j   *client.Job
		err error
	}
	done := make(chan waited, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	subs := root.NumSubscriptions()
	go func() {
		j, err := rootc.Wait(ctx, id)
		done <- waited{j, err}
	}()
	// Wait follows the job events on root's connection: once it has
	// subscribed (and the server has the subscription), the forged event
	// reaches it.
	require.Eventually(t, func() bool { return root.NumSubscriptions() > subs }, 10*time.Second, time.Millisecond, "Wait follows the job events")
	require.NoError(t, root.Flush())

	h1, _ := rc.connectAs(t, "h1")
	m := nats.NewMsg(sp.JobEvent("squares", "succeeded"))
	m.Header.Set(names.HeaderJobID, id)
	m.Data = []byte(`{"id":"` + id + `","type":"other","status":"succeeded","attempts":1,"result":666}`)
	require.NoError(t, h1.PublishMsg(m))
	require.NoError(t, h1.Flush())

	// The forged event is with root's connection before the job's real
	// end: Wait returns on the first that it takes.
	_, err = rootc.Cancel(t.Context(), id)
	require.NoError(t, err)
	w := <-done
	require.NoError(t, w.err)
	require.Equal(t, client.StatusCancelled, w.j.Status, "Wait returned a job ended by h1's forged event (result %s)", w.j.Result)
	require.Empty(t, w.j.Result)
}
