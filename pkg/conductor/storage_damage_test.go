package conductor_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// startOn starts a Conductor on dir with the HTTP API and the metrics as
// conductord serves them, logging into logs.
func startOn(t *testing.T, ctx context.Context, dir string, logs io.Writer) *conductor.Conductor {
	t.Helper()
	var c *conductor.Conductor
	cfg := conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Metrics: metrics.Handler(metrics.Source{
			Pools:   func(ctx context.Context) ([]client.Pool, error) { return c.Pools(ctx) },
			Workers: func() []client.Worker { return c.Workers() },
			Storage: func() metrics.Storage {
				s := c.Storage()
				return metrics.Storage{State: string(s.State), LostMessages: s.LostMessages()}
			},
		}),
	}
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	return c
}

func metricsText(t *testing.T, c *conductor.Conductor) string {
	t.Helper()
	resp, err := http.Get("http://" + c.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// TestConductor_StorageDamaged cuts the job stream's block file while the
// conductor is stopped: the next start says so in one error line, in
// /healthz and in the metrics, and keeps saying so at later starts until
// the checkpoint file is removed.
func TestConductor_StorageDamaged(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()

	c := startOn(t, ctx, dir, tWriter{t})
	code, body := healthz(t, c)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", body["status"])
	for i := range 20 {
		_, err := c.Client().Submit(ctx, "later", strings.Repeat("x", 1000)+string(rune('a'+i)))
		require.NoError(t, err)
	}
	c.Stop()

	space, err := subject.New("default")
	require.NoError(t, err)
	blocks, err := filepath.Glob(filepath.Join(dir, "jetstream", "$G", "streams", space.JobStream(), "msgs", "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks)
	last := blocks[len(blocks)-1]
	st, err := os.Stat(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, st.Size()/2))

	var logs syncBuffer
	c = startOn(t, ctx, dir, io.MultiWriter(&logs, tWriter{t}))
	s := c.Storage()
	require.Equal(t, conductor.StorageDegraded, s.State)
	require.NotZero(t, s.LostMessages())
	require.Equal(t, space.JobStream(), s.Lost[0].Stream)
	require.Equal(t, 1, strings.Count(logs.String(), "level=ERROR msg=\"storage damaged"), logs.String())
	code, body = healthz(t, c)
	require.Equal(t, http.StatusOK, code, "a damaged store still works")
	require.Equal(t, "degraded", body["status"])
	require.Contains(t, metricsText(t, c), `conductor_storage_state{state="degraded"} 1`)
	require.Contains(t, metricsText(t, c), "conductor_storage_lost_messages ")
	require.NotContains(t, metricsText(t, c), "conductor_storage_lost_messages 0")
	c.Stop()

	// Still loud at the next start, until the operator clears it.
	c = startOn(t, ctx, dir, tWriter{t})
	require.Equal(t, conductor.StorageDegraded, c.Storage().State)
	require.Equal(t, s.LostMessages(), c.Storage().LostMessages())
	c.Stop()
	require.NoError(t, os.Remove(filepath.Join(dir, conductor.CheckpointFile)))
	c = startOn(t, ctx, dir, tWriter{t})
	require.Equal(t, conductor.StorageOK, c.Storage().State)
	code, _ = healthz(t, c)
	require.Equal(t, http.StatusOK, code)
}

// TestConductor_StorageDamagedCrashImage starts on a copy of the data
// directory taken while the conductor ran (what a power loss leaves: no
// index written at a stop), with a record in the middle of the job
// stream's block corrupted: the server keeps the jobs before it only, and
// the start says how many are gone.
func TestConductor_StorageDamagedCrashImage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	c := startOn(t, ctx, dir, tWriter{t})
	for i := range 20 {
		_, err := c.Client().Submit(ctx, "later", strings.Repeat("x", 1000)+string(rune('a'+i)))
		require.NoError(t, err)
	}
	space, err := subject.New("default")
	require.NoError(t, err)
	waitFor(t, ctx, "the checkpoint of the 20 jobs", func() bool {
		raw, err := os.ReadFile(filepath.Join(dir, conductor.CheckpointFile))
		return err == nil && strings.Contains(string(raw), `"last_seq": 20`)
	})
	image := t.TempDir()
	require.NoError(t, os.CopyFS(image, os.DirFS(dir)))
	c.Stop()

	streamDir := filepath.Join(image, "jetstream", "$G", "streams", space.JobStream(), "msgs")
	blocks, err := filepath.Glob(filepath.Join(streamDir, "*.blk"))
	require.NoError(t, err)
	require.NotEmpty(t, blocks)
	b, err := os.ReadFile(blocks[0])
	require.NoError(t, err)
	for i := len(b) / 3; i < len(b)/3+50; i++ {
		b[i] ^= 0xff
	}
	require.NoError(t, os.WriteFile(blocks[0], b, 0o600))

	var logs syncBuffer
	c = startOn(t, ctx, image, io.MultiWriter(&logs, tWriter{t}))
	s := c.Storage()
	require.Equal(t, conductor.StorageDegraded, s.State)
	require.Equal(t, space.JobStream(), s.Lost[0].Stream)
	require.Greater(t, s.LostMessages(), uint64(10), "a third of the way into 20 jobs")
	require.Contains(t, logs.String(), "level=ERROR msg=\"storage damaged")
	require.Contains(t, metricsText(t, c), `conductor_storage_state{state="degraded"} 1`)
}

// TestConductor_StorageCleanRestart: a clean stop and start find nothing
// lost, though jobs were queued and some consumed out of order, and the
// server rebuilds no stream (which the damage check relies on).
func TestConductor_StorageCleanRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	c := startOn(t, ctx, dir, tWriter{t})
	for i := range 10 {
		_, err := c.Client().Submit(ctx, "later", i)
		require.NoError(t, err)
	}
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, err := subject.New("default")
	require.NoError(t, err)
	cons, err := js.CreateOrUpdateConsumer(ctx, space.JobStream(), jetstream.ConsumerConfig{Durable: "some", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var i int
	for m := range batch.Messages() {
		if i%3 == 1 {
			require.NoError(t, m.DoubleAck(ctx))
		}
		i++
	}
	require.Equal(t, 10, i)
	c.Stop()
	nc.Close()

	var logs syncBuffer
	c = startOn(t, ctx, dir, io.MultiWriter(&logs, tWriter{t}))
	require.Equal(t, conductor.StorageOK, c.Storage().State, c.Storage().Reason)
	require.NotContains(t, logs.String(), "level=ERROR")
	require.NotContains(t, logs.String(), "Filestore [")
}

// TestConductor_HealthzWithoutFileStore: without an embedded file store
// there is no storage to watch; /healthz says ok without it.
func TestConductor_HealthzWithoutFileStore(t *testing.T) {
	t.Parallel()
	c, err := conductor.New(conductor.Config{
		DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MemoryStorage: true,
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	code, body := healthz(t, c)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, map[string]any{"status": "ok"}, body)
	require.Equal(t, conductor.StorageOK, c.Storage().State)
}
