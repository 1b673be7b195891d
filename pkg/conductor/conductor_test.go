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
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/worker"
)

// TestMain lets the test binary play the worker of RunBatch: started by
// the broker, it serves testHandler.
func TestMain(m *testing.M) {
	if worker.IsWorker() {
		worker.Main(testHandler)
		return
	}
	goleak.VerifyTestMain(m,
		// A file store's flush loop, and the access-time service it
		// registers with, can outlive its server's shutdown by a moment
		// when the shutdown meets a stream being made (seen once under
		// CI's load): the server's goroutines, not ours, which are all
		// still checked.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
	)
}

// testHandler squares numbers; "fail" fails for good, "deep" answers a
// result nested 9000 levels deep, "bad-utf8" one that is not valid UTF-8,
// "crash-once" kills
// the process on its first attempt and succeeds on the next, "block" runs
// until cancelled, "hold:PATH" runs until the test releases it (see hold).
func testHandler(ctx context.Context, job *worker.Job) (any, error) {
	var s string
	if json.Unmarshal(job.Payload, &s) == nil {
		switch {
		case s == "block":
			<-ctx.Done()
			return nil, context.Cause(ctx)
		case strings.HasPrefix(s, "hold:"):
			return hold(strings.TrimPrefix(s, "hold:"))
		case s == "fail":
			return nil, worker.Permanent(errors.New("asked to fail"))
		case s == "deep": // the 18 KB result whose indented answer was 162 MB
			return json.RawMessage(strings.Repeat("[", 9000) + strings.Repeat("]", 9000)), nil
		case s == "bad-utf8":
			return json.RawMessage("{\"text\":\"a\xffb\xc3\"}"), nil
		case strings.HasPrefix(s, "big:"):
			// A large payload: its size and digest, to check it came whole.
			return bigAnswer(s), nil
		case strings.HasPrefix(s, "bigfail:"):
			// Fails for good until the file the payload names exists.
			if _, err := os.Stat(strings.SplitN(s, ":", 3)[1]); err != nil {
				return nil, worker.Permanent(errors.New("asked to fail"))
			}
			return bigAnswer(s), nil
		case s == "crash-once" && job.Attempt == 1:
			os.Exit(3)
		}
		return "ok after " + fmt.Sprint(job.Attempt), nil
	}
	var n int
	if err := job.Decode(&n); err != nil {
		return nil, err
	}
	return n * n, nil
}

type testBundle struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func setup(t *testing.T, cfg conductor.Config) (*conductor.Conductor, *testBundle) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.NATSListen = "127.0.0.1:0"
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	opts := []nats.Option{}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	nc, err := nats.Connect(c.NATSURL(), opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return c, &testBundle{nc: nc, js: js}
}

func TestClient_SubmitQueuesDurably(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()

	id, err := c.Client().Submit(ctx, "later", map[string]int{"x": 1})
	require.NoError(t, err)
	j, err := c.Client().Job(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, j.Status)
	require.Equal(t, "later", j.Type)
	require.False(t, j.CreatedAt.IsZero())

	space, _ := subject.New("default")
	stream, err := bundle.js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	msg, err := stream.GetLastMsgForSubject(ctx, space.Job("later"))
	require.NoError(t, err)
	require.JSONEq(t, `{"x":1}`, string(msg.Data))
	require.Equal(t, id, msg.Header.Get("Conductor-Job-Id"))
	// The state is stored before the job is published, and the job
	// carries its revision, which its first attempt's write expects.
	kv, err := bundle.js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	e, err := kv.Get(ctx, id)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatUint(e.Revision(), 10), msg.Header.Get("Conductor-State-Rev"))

	pools, err := c.Pools(ctx)
	require.NoError(t, err)
	require.Equal(t, []client.Pool{{Type: "later", Queued: 1}}, pools)

	_, err = c.Client().Job(ctx, "no-such-job")
	require.ErrorIs(t, err, client.ErrJobNotFound)
}

// A job the stream refuses (here: larger than its limit, lowered under
// the client's feet) leaves no state behind, and no payload object: a
// submission is acknowledged with all stored, or none. (In memory: no
// storage guard sets the stream's limits back meanwhile.)
func TestClient_SubmitRefusedLeavesNoState(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{MemoryStorage: true})
	cl, err := client.Connect(c.NATSURL(), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx := context.Background()
	sp, _ := subject.New("default")
	jobs, err := bundle.js.Stream(ctx, sp.JobStream())
	require.NoError(t, err)
	cfg := jobs.CachedInfo().Config
	cfg.MaxMsgSize = 64
	_, err = bundle.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	for key, size := range map[string]int{"inline": 8 << 10, "by-reference": 2 << 20} {
		_, err = cl.Submit(ctx, "big", strings.Repeat("x", size), client.WithIdempotencyKey(key))
		require.ErrorContains(t, err, "queue job", key)
		id := client.IdempotentID(cl.Config().Namespace, "big", key)
		_, err = cl.Job(ctx, id)
		require.ErrorIs(t, err, client.ErrJobNotFound, "%s: the state stored first was taken back", key)
	}
	require.Zero(t, payloadObjects(t, bundle.js), "the object stored first was taken back")

	cfg.MaxMsgSize = jobs.CachedInfo().Config.MaxMsgSize
	_, err = bundle.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	id2, err := cl.Submit(ctx, "big", "small", client.WithIdempotencyKey("inline"))
	require.NoError(t, err, "the key is free again")
	require.Equal(t, client.IdempotentID(cl.Config().Namespace, "big", "inline"), id2)
}

func TestClient_SubmitIdempotencyKey(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()

	a, err := c.Client().Submit(ctx, "later", 1, client.WithIdempotencyKey("k1"))
	require.NoError(t, err)
	b, err := c.Client().Submit(ctx, "later", 2, client.WithIdempotencyKey("k1"))
	require.NoError(t, err)
	require.Equal(t, a, b)
	other, err := c.Client().Submit(ctx, "later", 1, client.WithIdempotencyKey("k2"))
	require.NoError(t, err)
	require.NotEqual(t, a, other)

	space, _ := subject.New("default")
	stream, err := bundle.js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Msgs, "two keys, two jobs")
}

func TestClient_SubmitBadInput(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{MaxPayload: 100})
	ctx := context.Background()

	_, err := c.Client().Submit(ctx, "bad.type", 1)
	require.ErrorIs(t, err, subject.ErrBadToken)
	_, err = c.Client().Submit(ctx, "t", json.RawMessage("{nope"))
	require.ErrorIs(t, err, client.ErrBadPayload)
	_, err = c.Client().Submit(ctx, "t", make(chan int))
	require.ErrorIs(t, err, client.ErrBadPayload)

	cl, err := client.New(conn(t, c), client.Config{MaxPayload: 10})
	require.NoError(t, err)
	_, err = cl.Submit(ctx, "t", strings.Repeat("x", 20))
	var tooLarge *client.PayloadTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	require.Equal(t, 10, tooLarge.Limit)
}

// conn returns a fresh connection to c.
func conn(t *testing.T, c *conductor.Conductor) *nats.Conn {
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

func TestRunBatch_LocalWorkers(t *testing.T) {
	t.Parallel()

	var mu sync.Mutex
	results := map[string]string{}
	res, err := conductor.RunBatch(context.Background(), conductor.BatchConfig{
		Type:    "squares",
		Workers: 2,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), nil)),
		Jobs: func(submit func(any) error) error {
			for i := range 20 {
				if err := submit(i); err != nil {
					return err
				}
			}
			for _, s := range []string{"fail", "crash-once"} {
				if err := submit(s); err != nil {
					return err
				}
			}
			return nil
		},
		OnJobEnd: func(j *client.Job) {
			mu.Lock()
			defer mu.Unlock()
			results[string(j.Status)+" "+string(j.Result)+j.Error] = j.ID
		},
	})
	require.NoError(t, err)
	require.Equal(t, 22, res.Total)
	require.Equal(t, 21, res.Succeeded)
	require.Equal(t, 1, res.Dead)
	for i := range 20 {
		require.Contains(t, results, fmt.Sprintf("succeeded %d", i*i))
	}
	require.Contains(t, results, "dead asked to fail")
	require.Contains(t, results, `succeeded "ok after 2"`, "the crashed job is redelivered and counted as an attempt")
}

func TestConductor_HTTPAuth(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{Token: "tok"})
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)

	get := func(path, auth string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, get("/v1/pools", ""))
	require.Equal(t, http.StatusUnauthorized, get("/v1/pools", "Bearer nope"))
	require.Equal(t, http.StatusOK, get("/v1/pools", "Bearer tok"))
	require.Equal(t, http.StatusOK, get("/healthz", ""))
	require.Equal(t, http.StatusOK, get("/", ""))
}

func TestConductor_StopIsIdempotent(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{})
	c.Stop()
	c.Stop()
	select {
	case <-c.Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("Stopped not closed")
	}
	require.Error(t, c.Start(context.Background()), "a stopped conductor does not start again")
}

// TestConductor_StartContextBoundsTheRun cancels Start's context: the
// conductor stops as Stop stops it, and Stop then returns at once.
func TestConductor_StartContextBoundsTheRun(t *testing.T) {
	t.Parallel()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"})
	require.NoError(t, err)
	select {
	case <-c.Stopped():
	default:
		t.Fatal("Stopped not closed before Start")
	}
	c.Stop() // never started: returns at once
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, c.Start(ctx))
	require.NoError(t, c.Start(ctx), "a second Start while it runs does nothing")
	select {
	case <-c.Stopped():
		t.Fatal("stopped while its context lives")
	default:
	}
	cancel()
	<-c.Stopped()
	c.Stop()
	_, err = http.Get("http://" + c.HTTPAddr() + "/healthz")
	require.Error(t, err, "the HTTP API stopped")
	require.Error(t, c.Start(context.Background()), "a stopped conductor does not start again")
}

func TestConductor_ExistingNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	dir := t.TempDir() // their archives
	c, err := conductor.New(conductor.Config{NATSURL: ns.ClientURL(), Namespace: "other", DataDir: dir})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	require.Equal(t, ns.ClientURL(), c.NATSURL())

	id, err := c.Client().Submit(context.Background(), "later", 1)
	require.NoError(t, err)
	j, err := c.Client().Job(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, j.Status)

	// The namespace is in every name: a second conductor on the same NATS
	// with another namespace does not see the job.
	d, err := conductor.New(conductor.Config{NATSURL: ns.ClientURL(), DataDir: dir})
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(d.Stop)
	_, err = d.Client().Job(context.Background(), id)
	require.ErrorIs(t, err, client.ErrJobNotFound)
}

// hold is the job "hold:PATH": it creates PATH.started, then runs until
// the test writes a byte to the FIFO PATH.released, so that a test can act
// while a job is in flight. It opens the FIFO read-write, so that its read
// waits for the byte, not for a writer to open it.
func hold(path string) (any, error) {
	fifo, err := os.OpenFile(path+".released", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer fifo.Close()
	if err := os.WriteFile(path+".started", nil, 0o600); err != nil {
		return nil, err
	}
	if _, err := fifo.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	return "released", nil
}

// A RunBatch whose context is cancelled while a job runs stops gracefully:
// its workers finish the job and its outcome is stored while the embedded
// conductor still runs, and only then does the conductor stop.
func TestRunBatch_CancelStopsGracefully(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "job")
	require.NoError(t, syscall.Mkfifo(path+".released", 0o600))
	logs := &syncLog{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// The worker is a process of its own: wait for its file.
		started := assert.Eventually(t, func() bool {
			_, err := os.Stat(path + ".started")
			return err == nil
		}, 30*time.Second, 5*time.Millisecond, "the job never started")
		cancel()
		if !started {
			return
		}
		// Non-blocking: the worker holds the FIFO open; should it be gone,
		// this fails instead of waiting forever.
		fifo, err := os.OpenFile(path+".released", os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			_, err = fifo.Write([]byte{1})
			_ = fifo.Close()
		}
		assert.NoError(t, err, "release the job")
	}()
	_, err := conductor.RunBatch(ctx, conductor.BatchConfig{
		Type: "hold", Workers: 1, Logger: logger,
		Jobs: func(submit func(any) error) error { return submit("hold:" + path) },
	})
	require.ErrorIs(t, err, context.Canceled)
	logged := logs.String()
	require.NotContains(t, logged, "not stored", "the job's outcome was lost to the conductor's stop")
	exited, stopping := strings.Index(logged, `msg="worker exited"`), strings.Index(logged, `msg="conductor stopping"`)
	require.True(t, exited >= 0 && stopping >= 0, "missing log lines:\n%s", logged)
	require.Less(t, exited, stopping, "the conductor began to stop before the workers had finished")
}

// syncLog collects log output from several goroutines.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// The embedded conductor's settings are refused with a Client: they are
// the running conductor's to set.
func TestRunBatch_EmbeddedSettingsNeedNoClient(t *testing.T) {
	t.Parallel()
	_, err := conductor.RunBatch(t.Context(), conductor.BatchConfig{
		Type:    "t",
		Jobs:    func(func(any) error) error { return nil },
		Client:  &client.Client{},
		Lookups: map[string]map[string]any{"rates": {"usd": 1}},
	})
	require.ErrorContains(t, err, "the embedded conductor's")
}
