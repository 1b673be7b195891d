package conductor_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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
	require.Contains(t, body, `"result":49`)
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
	srv2 := serve(t, c2)
	code, body = get(t, srv2, "/healthz")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"status":"ok"`)

	// A torn archive (a crash cut its last record) is loud at start:
	// healthy, but degraded, saying what was found.
	c2.Stop()
	data, err := filepath.Glob(filepath.Join(dir, "archive", "default", "*.data"))
	require.NoError(t, err)
	require.NotEmpty(t, data)
	last := data[len(data)-1]
	fi, err := os.Stat(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, fi.Size()-3))
	c3, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c3.Start(context.Background()))
	t.Cleanup(c3.Stop)
	code, body = get(t, serve(t, c3), "/healthz")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `"status":"degraded"`)
	require.Contains(t, body, "the archive of final states was found damaged: ")
	require.Contains(t, body, " bytes torn", "the record cut, from the 3 bytes cut off its end")
}

// A submission repeated with its idempotency key after the job's final
// state left the state bucket for the archive finds the job there: it is
// not queued again, and no new state shadows the archived one.
func TestConductor_KeyedRepeatAfterTheArchiveIsNotQueued(t *testing.T) {
	t.Parallel()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", ArchiveAfter: time.Second})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	bundle := &testBundle{nc: conn(t, c)}
	bundle.js, err = jetstream.New(bundle.nc)
	require.NoError(t, err)
	startAgent(t, bundle, "squares")
	ctx := context.Background()
	id, err := c.Client().Submit(ctx, "squares", 7, client.WithIdempotencyKey("order-7"))
	require.NoError(t, err)
	first, err := c.Client().Wait(ctx, id)
	require.NoError(t, err)

	space, _ := subject.New("default")
	kv, err := bundle.js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kv.Get(ctx, id)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, 15*time.Second, 50*time.Millisecond, "the final state leaves the bucket")

	again, err := c.Client().Submit(ctx, "squares", 7, client.WithIdempotencyKey("order-7"))
	require.NoError(t, err)
	require.Equal(t, id, again)
	_, err = kv.Get(ctx, id)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "no queued state over the archived one")
	jobs, err := bundle.js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	require.Zero(t, jobs.CachedInfo().State.Msgs, "nothing queued")
	got, err := c.Client().Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, first.UpdatedAt, got.UpdatedAt, "the job as it ended, from the archive")
	require.Len(t, got.History, 1, "run once")
}
