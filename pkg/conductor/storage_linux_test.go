package conductor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// tmpfs mounts a tmpfs of size bytes on a new directory and unmounts it at
// cleanup. It needs root: the test is skipped, saying so, without it.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (run as root, as CI does)")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("mounting a tmpfs is not permitted here: %v", err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// waitFor calls cond until it returns true, failing the test at the
// deadline of ctx with what it says.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// healthz returns GET /healthz's status code and body.
func healthz(t *testing.T, c *conductor.Conductor) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + c.HTTPAddr() + "/healthz")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

// TestConductor_StorageFull fills a small tmpfs with jobs until they are
// refused: /healthz says so with 503, a job state can still be stored,
// and once the jobs are consumed submissions work again and /healthz is
// ok, without a restart.
func TestConductor_StorageFull(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := tmpfs(t, "32m")
	c, err := conductor.New(conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		StorageReserve: 8 << 20, StorageCheck: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	code, body := healthz(t, c)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ok", body["status"])

	payload := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`)
	var submitted int
	var refused error
	for refused == nil {
		require.Less(t, submitted, 1000, "a 32 MiB disk took 1000 jobs of 64 KiB")
		if _, refused = c.Client().Submit(ctx, "fill", payload); refused == nil {
			submitted++
		}
	}
	t.Logf("%d jobs queued, then: %v", submitted, refused)
	require.Greater(t, submitted, 100)

	waitFor(t, ctx, "healthz 503", func() bool { code, body = healthz(t, c); return code == http.StatusServiceUnavailable })
	require.Equal(t, "full", body["status"])
	require.Contains(t, body["error"], "new jobs are refused")
	resp, err := http.Post("http://"+c.HTTPAddr()+"/v1/jobs/fill", "application/json", bytes.NewReader(payload))
	require.NoError(t, err)
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(answer))
	require.Contains(t, string(answer), "storage full: ")
	require.Contains(t, string(answer), "nothing was queued")

	// The reserve takes the final states of the jobs queued.
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, err := subject.New("default")
	require.NoError(t, err)
	states, err := js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	for i := range 64 {
		_, err := states.Put(ctx, fmt.Sprintf("final-%d", i), bytes.Repeat([]byte("s"), 8<<10))
		require.NoError(t, err, "state write %d with the reserve", i)
	}

	// A worker takes and acks every job: the room comes back.
	stream, err := js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "drain", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	for acked := 0; acked < submitted; {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			require.NoError(t, m.DoubleAck(ctx))
			acked++
		}
		require.NoError(t, batch.Error())
	}
	require.NoError(t, stream.DeleteConsumer(ctx, "drain"))
	waitFor(t, ctx, "healthz ok", func() bool { code, body = healthz(t, c); return code == http.StatusOK })
	require.Equal(t, "ok", body["status"])
	_, err = c.Client().Submit(ctx, "fill", payload)
	require.NoError(t, err, "a job after the room came back")
	require.Zero(t, c.Storage().WriteErrors, "the disk never ran out")
}

// tWriter sends a logger's lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestConductor_StorageWriteErrorRecovers fills the disk under the store
// with a file of another program until writes fail: a state write meets
// the error, /healthz says the store failed, and once the file is gone
// the conductor restarts JetStream by itself and the store takes writes
// again.
func TestConductor_StorageWriteErrorRecovers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := tmpfs(t, "16m")
	c, err := conductor.New(conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		StorageReserve: 4 << 20, StorageCheck: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, err := subject.New("default")
	require.NoError(t, err)
	states, err := js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	_, err = states.Put(ctx, "before", []byte("s"))
	require.NoError(t, err)

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	require.NoError(t, err)
	chunk := bytes.Repeat([]byte("f"), 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, f.Close())

	// Writes fail now (the server does not answer them: they time out).
	var failed error
	for i := 0; failed == nil; i++ {
		require.Less(t, i, 1000)
		putCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, failed = states.Put(putCtx, fmt.Sprintf("during-%d", i), chunk)
		cancel()
	}
	t.Logf("state write refused: %v", failed)
	waitFor(t, ctx, "healthz failed", func() bool {
		code, body := healthz(t, c)
		return code == http.StatusServiceUnavailable && body["status"] == "failed"
	})
	require.EqualValues(t, 1, c.Storage().WriteErrors)

	require.NoError(t, os.Remove(filler))
	waitFor(t, ctx, "healthz ok", func() bool { code, _ := healthz(t, c); return code == http.StatusOK })
	require.EqualValues(t, 1, c.Storage().Restarts)
	_, err = states.Put(ctx, "after", []byte("s"))
	require.NoError(t, err)
	e, err := states.Get(ctx, "before")
	require.NoError(t, err)
	require.Equal(t, "s", string(e.Value()))
	_, err = c.Client().Submit(ctx, "later", 1)
	require.NoError(t, err)
}
