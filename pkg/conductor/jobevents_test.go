package conductor

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// conductord takes each job event once: its Client's waits are woken from
// conductord's own subscription, and the Client makes none of its own.
func TestConductor_WaitsFedByItsSubscription(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	ch, err := c.client.addWaiter("job-1")
	require.NoError(t, err)
	ev := nats.NewMsg(c.space.JobEvent("squares", string(wire.StatusSucceeded)))
	ev.Header.Set(wire.HeaderJobID, "job-1")
	ev.Data = []byte(`{"id":"job-1","type":"squares","status":"succeeded","attempts":1,"result":49}`)
	require.NoError(t, nc.PublishMsg(ev))
	select {
	case j := <-ch:
		require.Equal(t, "job-1", j.ID)
		require.JSONEq(t, `49`, string(j.Result))
	case <-time.After(10 * time.Second):
		t.Fatal("the wait was not woken by the job's event")
	}
	c.client.mu.Lock()
	defer c.client.mu.Unlock()
	require.Nil(t, c.client.sub, "the Client subscribed to the job events as well")
}
