package client

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestClient_FeedEnds: a Client with Config.FeedEnds takes no job events;
// JobEnded wakes its waits, which read the job's state.
func TestClient_FeedEnds(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, err := subject.New("default")
	require.NoError(t, err)
	states, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: space.StateBucket()})
	require.NoError(t, err)
	put := func(status wire.Status, result string) {
		t.Helper()
		st, err := json.Marshal(wire.Job{ID: "job-1", Type: "squares", Status: status, Attempts: 1, Result: json.RawMessage(result)})
		require.NoError(t, err)
		_, err = states.Put(ctx, "job-1", st)
		require.NoError(t, err)
	}

	// Only JobEnded may wake the wait: no recheck within the test.
	c, err := New(nc, Config{FeedEnds: true, RecheckInterval: time.Hour})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	waiting := make(chan string, 1)
	c.onWaiting = func(id string) { waiting <- id }
	put(wire.StatusRunning, "")
	waited := make(chan *Job, 1)
	go func() {
		j, err := c.Wait(ctx, "job-1")
		if err != nil {
			t.Error(err)
		}
		waited <- j
	}()
	require.Equal(t, "job-1", <-waiting) // it read the job running
	put(wire.StatusSucceeded, "49")
	c.JobEnded("job-0") // another job's end wakes nothing
	c.JobEnded("job-1")
	select {
	case j := <-waited:
		require.Equal(t, "job-1", j.ID)
		require.JSONEq(t, `49`, string(j.Result))
	case <-time.After(10 * time.Second):
		t.Fatal("the wait was not woken by the job's end")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Nil(t, c.sub, "the Client subscribed to the job events")
}
