package client_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/worker"
)

// TestMain lets the test binary play the worker of the examples' hosts:
// started by the broker, it squares numbers.
func TestMain(m *testing.M) {
	if worker.IsWorker() {
		worker.Main(func(_ context.Context, job *worker.Job) (any, error) {
			var n int
			if err := job.Decode(&n); err != nil {
				return nil, err
			}
			return n * n, nil
		})
		return
	}
	goleak.VerifyTestMain(m)
}

// testBundle is what a test of the Client works with: the conductor's
// NATS, as a worker or a host would reach it.
type testBundle struct {
	conductor *conductor.Conductor
	nc        *nats.Conn
	js        jetstream.JetStream
}

// setup starts an embedded conductor (its own JetStream in a temporary
// directory) and returns a Client of its own on it.
func setup(t *testing.T) (*client.Client, *testBundle) {
	t.Helper()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", MemoryStorage: true})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cl, err := client.Connect(c.NATSURL(), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl, &testBundle{conductor: c, nc: nc, js: js}
}
