package conductor

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

// conductord learns of job ends from the wire.Ends that workerd announces
// a burst at a time: they count, and the final ones go to its Client's
// waits (which pkg/client's tests see woken); neither conductord nor its
// Client takes the job events.
func TestConductor_WaitsAndCountsFedByJobEnds(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0"})
	require.NoError(t, err)
	handled := make(chan []string, 10)
	c.onEnds = func(ended []string) { handled <- ended }
	acked := make(chan error, 10)
	c.ackEnds = func(ctx context.Context, m jetstream.Msg) error {
		err := m.DoubleAck(ctx)
		acked <- err
		return err
	}
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	next := func() []string {
		t.Helper()
		select {
		case ended := <-handled:
			return ended
		case <-time.After(10 * time.Second):
			t.Fatal("job ends not handled")
			return nil
		}
	}

	// A job event is for other subscribers: it counts nothing here.
	ev := nats.NewMsg(c.space.JobEvent("squares", string(wire.StatusSucceeded)))
	ev.Header.Set(names.HeaderJobID, "job-2")
	require.NoError(t, nc.PublishMsg(ev))
	ends := wire.Ends{Type: "squares", Jobs: []wire.End{{ID: "job-0", Status: wire.StatusFailed}, {ID: "job-1", Status: wire.StatusSucceeded}}, Superseded: 2}
	require.NoError(t, nc.Publish(c.space.JobEnds("squares"), ends.AppendJSON(nil)))
	require.Equal(t, []string{"job-1"}, next(), "only the final end wakes the waits")
	// Garbage, and ends whose type is not their subject's, are logged and
	// ignored.
	require.NoError(t, nc.Publish(c.space.JobEnds("squares"), []byte("{")))
	other := wire.Ends{Type: "other", Jobs: []wire.End{{ID: "job-3", Status: wire.StatusSucceeded}}}
	require.NoError(t, nc.Publish(c.space.JobEnds("squares"), other.AppendJSON(nil)))
	other.Type = "a:b"
	require.NoError(t, nc.Publish("conductor.default.ends.a:b", other.AppendJSON(nil)))
	for range 3 {
		require.Empty(t, next())
	}
	// The counts are shown once saved, before the ends are acked.
	for range 4 {
		select {
		case err := <-acked:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("job ends not acked")
		}
	}
	require.Equal(t, counts{Succeeded: 1, Failed: 1, Superseded: 2}, c.stats.snapshot()["squares"], "the job event was not counted")
	require.NotContains(t, c.stats.snapshot(), "other")
	require.NotContains(t, c.stats.snapshot(), "a:b")

	// Its Client waits without the job events.
	_, err = c.client.Wait(context.Background(), "no-such-job")
	require.Error(t, err)
	mine, err := nc.SubscribeSync(c.space.JobEvents()) // the one subscriber expected
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	defer func() { _ = mine.Unsubscribe() }()
	subs, err := c.ns.Subsz(&server.SubszOptions{Subscriptions: true, Test: c.space.JobEvent("squares", string(wire.StatusSucceeded))})
	require.NoError(t, err)
	require.Len(t, subs.Subs, 1, "the Client subscribed to the job events: %+v", subs.Subs)
}
