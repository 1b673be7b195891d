package conductor_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
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
	// A submission by NATS request is refused as over HTTP: before its
	// state is written.
	r, err := nc.Request(space.Submit("fill"), payload, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, "503", r.Header.Get(names.HeaderStatus), string(r.Data))
	require.Contains(t, string(r.Data), "storage full: ")
	require.Contains(t, string(r.Data), "nothing was queued")
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

// fillDisk has another program take, in a file of its own at path, all
// the room free on the disk at once, and stop, as a program writing a
// large file does. It takes the room free when it starts and no more: a
// filler that went on writing until ENOSPC took the room the storage
// guard gives back once it sees the disk full (its ballast, 4 MiB) within
// a check, leaving the jobs queued none to drain in, so that the drain
// was left to chance. The room is allocated in one call (tmpfs allocates
// it all or, failing, gives back what it took); it is asked again only
// when a write of the conductor's took some of it meanwhile, and while the
// guard still holds its ballast: once that is given back, the disk was
// seen full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()
	dir := filepath.Dir(path)
	for attempt := 0; ; attempt++ {
		var st syscall.Statfs_t
		require.NoError(t, syscall.Statfs(dir, &st))
		free := int64(st.Bavail) * st.Bsize
		if free == 0 {
			return
		}
		err := syscall.Fallocate(int(f.Fd()), 0, 0, free)
		if err == nil {
			return
		}
		require.ErrorIs(t, err, syscall.ENOSPC)
		if _, err := os.Stat(filepath.Join(dir, conductor.BallastFile)); errors.Is(err, os.ErrNotExist) {
			return
		}
		require.Less(t, attempt, 100, "the disk never stood still for an allocation")
	}
}

// putUntilRefused writes states of 64 KiB until one is refused (the server
// does not answer a store that refuses writes: it times out).
func putUntilRefused(t *testing.T, ctx context.Context, states jetstream.KeyValue, prefix string) {
	t.Helper()
	var failed error
	for i := 0; failed == nil; i++ {
		require.Less(t, i, 1000)
		putCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, failed = states.Put(putCtx, fmt.Sprintf("%s-%d", prefix, i), bytes.Repeat([]byte("s"), 64<<10))
		cancel()
	}
	t.Logf("state write refused: %v", failed)
}

// TestConductor_StorageWriteErrorRecovers fills the disk under the store
// with a file of another program: the guard gives back its ballast, and
// states are stored in its room while the disk stays full (/healthz full,
// not failed). Filled further, until a state write fails, with no ballast
// left, the store is stuck: /healthz says failed and why, and the log says
// it once. Once the file is gone, JetStream is restarted, the ballast held
// again, and /healthz is ok.
func TestConductor_StorageWriteErrorRecovers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := tmpfs(t, "16m")
	logs := &syncLog{}
	c, err := conductor.New(conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		StorageReserve: 4 << 20, StorageCheck: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	const ballast = 1 << 20 // a quarter of the reserve
	waitFor(t, ctx, "the ballast", func() bool { return c.Storage().BallastBytes == ballast })
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

	fillDisk(t, filepath.Join(dir, "filler"))
	waitFor(t, ctx, "the ballast given back", func() bool {
		st := c.Storage()
		return st.BallastBytes == 0 && st.State == conductor.StorageFull
	})
	_, err = states.Put(ctx, "in-the-ballast", []byte("s"))
	require.NoError(t, err, "a state write in the ballast's room")
	code, body := healthz(t, c)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "full", body["status"], body)
	require.Zero(t, c.Storage().WriteErrors)

	// Filled on: no ballast is left to give back.
	putUntilRefused(t, ctx, states, "stuck")
	waitFor(t, ctx, "healthz failed", func() bool {
		code, body = healthz(t, c)
		return code == http.StatusServiceUnavailable && body["status"] == "failed"
	})
	require.Contains(t, body["error"], "no room to give back")
	for range 3 { // each a check
		healthz(t, c)
	}
	require.Equal(t, 1, strings.Count(logs.String(), `msg="storage stuck: `), "logged once")
	require.EqualValues(t, 1, c.Storage().WriteErrors)
	require.Zero(t, c.Storage().Restarts)

	// Half the ballast's room back, less than its size: JetStream is
	// restarted in it, and states are stored again while the disk stays
	// full beyond the reserve.
	filler := filepath.Join(dir, "filler")
	fi, err := os.Stat(filler)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(filler, fi.Size()-ballast/2))
	waitFor(t, ctx, "JetStream restarted in part of the ballast's room", func() bool {
		st := c.Storage()
		return st.Restarts == 1 && st.State == conductor.StorageFull
	})
	_, err = states.Put(ctx, "restarted", []byte("s"))
	require.NoError(t, err, "a state write after the restart")
	require.Less(t, c.Storage().FreeBytes, uint64(ballast), "the disk is still full beyond the reserve")

	require.NoError(t, os.Remove(filler))
	waitFor(t, ctx, "healthz ok", func() bool { code, _ := healthz(t, c); return code == http.StatusOK })
	require.EqualValues(t, 1, c.Storage().Restarts)
	require.EqualValues(t, ballast, c.Storage().BallastBytes)
	_, err = states.Put(ctx, "after", []byte("s"))
	require.NoError(t, err)
	e, err := states.Get(ctx, "in-the-ballast")
	require.NoError(t, err)
	require.Equal(t, "s", string(e.Value()))
	_, err = c.Client().Submit(ctx, "later", 1)
	require.NoError(t, err)
}

// fillUntilRefused submits squares jobs 0, 1, ... from 8 submitters, each
// until its first refusal, and returns the ids of those queued by number,
// and the first refusal.
func fillUntilRefused(t *testing.T, ctx context.Context, cl *client.Client) (map[int]string, error) {
	t.Helper()
	var (
		next    atomic.Int64
		mu      sync.Mutex
		ids     = map[int]string{}
		refused error
		wg      sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				id, err := cl.Submit(ctx, "squares", i)
				mu.Lock()
				if err != nil {
					refused = cmp.Or(refused, err)
					mu.Unlock()
					return
				}
				ids[i] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.NoError(t, ctx.Err(), "the disk took every job until the deadline")
	return ids, refused
}

// TestConductor_StorageFullDrains is the full-disk phase of the chaos run
// in-process: a conductor on a 32 MiB tmpfs, with the default reserve (16
// MiB) and check, takes small jobs with no worker until they are refused,
// and /healthz says full at once; then two workers drain the queue: every
// job succeeds with its own result and no store meets a write error (what
// draining writes was kept room for), /healthz is ok again and a new job
// runs.
func TestConductor_StorageFullDrains(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := tmpfs(t, "32m")
	c, err := conductor.New(conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	code, body := healthz(t, c)
	require.Equal(t, http.StatusOK, code, body)

	began := time.Now()
	ids, refused := fillUntilRefused(t, ctx, c.Client())
	code, body = healthz(t, c)
	st := c.Storage()
	t.Logf("%d jobs queued in %s, then: %v; free %d, ballast %d, limits %d jobs, %d bytes, %d bytes a job kept for its drain",
		len(ids), time.Since(began).Round(time.Millisecond), refused, st.FreeBytes, st.BallastBytes, st.JobMsgsLimit, st.JobBytesLimit, st.DrainBytesPerJob)
	require.ErrorContains(t, refused, "exceeded")
	require.Equal(t, http.StatusServiceUnavailable, code, "healthz right after the refusals: %v", body)
	require.Equal(t, "full", body["status"])
	require.Contains(t, body["error"], "new jobs are refused")
	require.Greater(t, len(ids), 1000)

	// The drain, while the free space is watched.
	began = time.Now()
	minFree := st.FreeBytes
	watch, stopWatch := context.WithCancel(ctx)
	var watched sync.WaitGroup
	watched.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watch.Done():
				return
			case <-tick.C:
				var fs syscall.Statfs_t
				if syscall.Statfs(dir, &fs) == nil {
					minFree = min(minFree, fs.Bavail*uint64(fs.Bsize))
				}
			}
		}
	})
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	startAgentN(t, &testBundle{nc: nc, js: js}, 2, "squares")
	jobs := make(chan int)
	var waits sync.WaitGroup
	for range 16 {
		waits.Go(func() {
			for i := range jobs {
				j, err := c.Client().Wait(ctx, ids[i])
				if assert.NoError(t, err, "job %d", i) {
					assert.Equal(t, client.StatusSucceeded, j.Status, "job %d: %s", i, j.Error)
					assert.Equal(t, strconv.Itoa(i*i), string(j.Result), "job %d", i)
				}
			}
		})
	}
	for i := range ids {
		jobs <- i
	}
	close(jobs)
	waits.Wait()
	stopWatch()
	watched.Wait()
	st = c.Storage()
	t.Logf("%d jobs drained in %s; least free %d bytes (ballast %d, reserve %d); %d bytes a job kept for its drain after it",
		len(ids), time.Since(began).Round(time.Millisecond), minFree, st.BallastBytes, st.ReserveBytes, st.DrainBytesPerJob)
	require.Zero(t, st.WriteErrors, "a store met a write error while the queue drained")
	require.Zero(t, st.Restarts)

	waitFor(t, ctx, "healthz ok after the drain", func() bool { code, body = healthz(t, c); return code == http.StatusOK })
	require.Equal(t, "ok", body["status"])
	j, err := c.Client().SubmitAndWait(ctx, "squares", 7)
	require.NoError(t, err, "a job after the drain")
	require.Equal(t, "49", string(j.Result))
}

// TestConductor_StorageDrainsOnAFullDisk queues jobs with no worker, then
// another program fills the disk, and workers start: with no room, the
// workers could not even subscribe to the jobs, and nothing would end and
// free room; the guard gives back its ballast and the queue drains in its
// room, without the guard calling it stuck. Once the other program's file
// is gone, /healthz is ok and the ballast is held again.
func TestConductor_StorageDrainsOnAFullDisk(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := tmpfs(t, "32m")
	logs := &syncLog{}
	c, err := conductor.New(conductor.Config{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", StorageCheck: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, logs), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)
	const ballast = 4 << 20 // a quarter of the default reserve, 16 MiB
	waitFor(t, ctx, "the ballast", func() bool { return c.Storage().BallastBytes == ballast })
	const queued = 1000
	ids := make([]string, queued)
	for i := range ids {
		ids[i], err = c.Client().Submit(ctx, "squares", i)
		require.NoError(t, err)
	}

	fillDisk(t, filepath.Join(dir, "filler"))
	// The guard's update of the job stream's limits, before the workers
	// make their consumers: nats-server 2.15 reads a file store's config
	// unlocked when it makes a consumer, a race with a stream update that
	// the race detector reports (the test's, not conductor's: a host makes
	// its consumers once, at its start).
	waitFor(t, ctx, "the guard to see the disk full", func() bool {
		st := c.Storage()
		return st.State == conductor.StorageFull && st.JobMsgsLimit > 0
	})
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	began := time.Now()
	startAgentN(t, &testBundle{nc: nc, js: js}, 2, "squares")
	jobs := make(chan int)
	var waits sync.WaitGroup
	for range 16 {
		waits.Go(func() {
			for i := range jobs {
				j, err := c.Client().Wait(ctx, ids[i])
				if assert.NoError(t, err, "job %d", i) {
					assert.Equal(t, strconv.Itoa(i*i), string(j.Result), "job %d", i)
				}
			}
		})
	}
	for i := range ids {
		jobs <- i
	}
	close(jobs)
	waits.Wait()
	st := c.Storage()
	t.Logf("%d jobs drained in %s on a full disk: %d write errors, %d JetStream restarts; %s", queued, time.Since(began).Round(time.Millisecond), st.WriteErrors, st.Restarts, st.Reason)
	// Given back for the drain (the guard may hold it again once the
	// drain has freed room: the state now says nothing of the drain).
	require.Contains(t, logs.String(), `msg="storage ballast given back`, "given back")
	require.Equal(t, conductor.StorageFull, st.State, "the disk is still full")
	require.NotContains(t, logs.String(), `msg="storage stuck: `, "the drain had the ballast's room")

	require.NoError(t, os.Remove(filepath.Join(dir, "filler")))
	waitFor(t, ctx, "healthz ok", func() bool { code, _ := healthz(t, c); return code == http.StatusOK })
	require.EqualValues(t, ballast, c.Storage().BallastBytes)
	j, err := c.Client().SubmitAndWait(ctx, "squares", 7)
	require.NoError(t, err, "a job once the disk has room")
	require.Equal(t, "49", string(j.Result))
}
