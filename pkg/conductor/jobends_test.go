package conductor

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// conductord learns of job ends from the wire.Ends that workerd announces
// a burst at a time: they wake its Client's waits and count, and neither
// conductord nor its Client takes the job events.
func TestConductor_WaitsAndCountsFedByJobEnds(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	c.clientRecheck = time.Hour // only the end may wake the wait
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()

	put := func(status wire.Status, result string) {
		t.Helper()
		st, err := json.Marshal(wire.Job{ID: "job-1", Type: "squares", Status: status, Attempts: 1, Result: json.RawMessage(result)})
		require.NoError(t, err)
		states, err := c.js.KeyValue(ctx, c.space.StateBucket())
		require.NoError(t, err)
		_, err = states.Put(ctx, "job-1", st)
		require.NoError(t, err)
	}
	put(wire.StatusRunning, "")
	waited := make(chan *client.Job, 1)
	go func() {
		j, err := c.client.Wait(ctx, "job-1")
		if err != nil {
			t.Error(err)
		}
		waited <- j
	}()
	require.Eventually(t, func() bool {
		return c.link.Waits("job-1") == 1
	}, 10*time.Second, time.Millisecond, "the wait never started")

	put(wire.StatusSucceeded, "49")
	ends := wire.Ends{Type: "squares", Jobs: []wire.End{{ID: "job-0", Status: wire.StatusFailed}, {ID: "job-1", Status: wire.StatusSucceeded}}}
	require.NoError(t, nc.Publish(c.space.JobEnds("squares"), ends.AppendJSON(nil)))
	// A job event is for other subscribers: it counts nothing here.
	ev := nats.NewMsg(c.space.JobEvent("squares", string(wire.StatusSucceeded)))
	ev.Header.Set(wire.HeaderJobID, "job-2")
	require.NoError(t, nc.PublishMsg(ev))
	// Garbage, and ends whose type is not their subject's, are logged and
	// ignored.
	require.NoError(t, nc.Publish(c.space.JobEnds("squares"), []byte("{")))
	other := wire.Ends{Type: "other", Jobs: []wire.End{{ID: "job-3", Status: wire.StatusSucceeded}}}
	require.NoError(t, nc.Publish(c.space.JobEnds("squares"), other.AppendJSON(nil)))
	other.Type = "a:b"
	require.NoError(t, nc.Publish("conductor.default.ends.a:b", other.AppendJSON(nil)))
	select {
	case j := <-waited:
		require.Equal(t, "job-1", j.ID)
		require.JSONEq(t, `49`, string(j.Result))
	case <-time.After(10 * time.Second):
		t.Fatal("the wait was not woken by the job's end")
	}
	require.Eventually(t, func() bool {
		n := c.stats.snapshot()["squares"]
		return n.Succeeded == 1 && n.Failed == 1
	}, 10*time.Second, 5*time.Millisecond, "the ends were not counted")
	require.NoError(t, nc.Flush())
	require.Equal(t, counts{Succeeded: 1, Failed: 1}, c.stats.snapshot()["squares"], "the job event was counted")
	require.NotContains(t, c.stats.snapshot(), "other")
	require.NotContains(t, c.stats.snapshot(), "a:b")
	require.False(t, c.link.FollowsJobEvents(), "the Client subscribed to the job events")
}
