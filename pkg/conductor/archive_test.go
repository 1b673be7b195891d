package conductor_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A final state leaves the state bucket ArchiveAfter after it was written
// (the server then holds no memory for it); the archive has it, for the
// Client, the HTTP API and a restarted conductord alike.
func TestConductor_FinalStatesMoveToTheArchive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", ArchiveAfter: time.Second}
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	bundle := &testBundle{nc: conn(t, c)}
	bundle.js, err = jetstream.New(bundle.nc)
	require.NoError(t, err)
	startAgent(t, bundle, "squares")
	ctx := context.Background()
	id, err := c.Client().Submit(ctx, "squares", 7)
	require.NoError(t, err)
	j, err := c.Client().Wait(ctx, id)
	require.NoError(t, err)
	require.JSONEq(t, "49", string(j.Result))

	space, _ := subject.New("default")
	kv, err := bundle.js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kv.Get(ctx, id)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, 15*time.Second, 50*time.Millisecond, "the final state leaves the bucket")
	got, err := c.Client().Job(ctx, id)
	require.NoError(t, err, "read from the archive")
	require.Equal(t, client.StatusSucceeded, got.Status)
	require.JSONEq(t, "49", string(got.Result))
	srv := serve(t, c)
	code, body := get(t, srv, "/v1/jobs/"+id)
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"result": 49`)
	code, _ = get(t, srv, "/v1/jobs/no-such-job")
	require.Equal(t, 404, code)

	c.Stop()
	c2, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c2.Start(context.Background()))
	t.Cleanup(c2.Stop)
	cl, err := client.Connect(c2.NATSURL(), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	got, err = cl.Job(ctx, id)
	require.NoError(t, err, "kept across a restart")
	require.JSONEq(t, "49", string(got.Result))
}
