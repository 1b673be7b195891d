package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/flow"
	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/worker"
)

// runPrefetchFIFO: ready with a prefetch of 2, then each job in the order
// received: a payload that names a FIFO ends with the line read from it,
// {"sleep":"11ms"} is echoed after that long (a job of known length), any
// other is echoed at once.
func runPrefetchFIFO() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Prefetch: 2})
	c.serve(func(m proto.Message) bool {
		var work struct{ Sleep string }
		if json.Unmarshal(m.Payload, &work) == nil && work.Sleep != "" {
			d, _ := time.ParseDuration(work.Sleep)
			time.Sleep(d) // the job's work
			return c.echo(m)
		}
		var path string
		if json.Unmarshal(m.Payload, &path) == nil {
			if _, err := os.Stat(path); err == nil {
				b, _ := os.ReadFile(path)
				result, _ := json.Marshal(string(b))
				c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
				return true
			}
		}
		return c.echo(m)
	})
	return 0
}

// runSDKFIFO: the same jobs served by the Go SDK's Main (its prefetch from
// CONDUCTOR_PREFETCH), with its own handling of queued jobs (cancel, stop).
func runSDKFIFO() int {
	worker.Main(func(_ context.Context, job *worker.Job) (any, error) {
		var path string
		if job.Decode(&path) == nil {
			if _, err := os.Stat(path); err == nil {
				b, err := os.ReadFile(path)
				return string(b), err
			}
		}
		return job.Payload, nil
	})
	return 0
}

func init() {
	fakeWorkers["prefetch-fifo"] = runPrefetchFIFO
	fakeWorkers["sdk-fifo"] = runSDKFIFO
}

// readySource is the bundle's Source plus jobs at hand for TryNext.
type readySource struct {
	broker.Source
	mu    sync.Mutex
	ready []*broker.Job
	// held become ready when Next hands out the job heldFor (both set
	// before the pool starts): the worker then gets them queued behind it.
	heldFor string
	held    []*broker.Job
}

func (s *readySource) Next(ctx context.Context) (*broker.Job, error) {
	j, err := s.Source.Next(ctx)
	if j != nil && j.ID == s.heldFor {
		s.mu.Lock()
		s.ready = append(s.ready, s.held...)
		s.held = nil
		s.mu.Unlock()
	}
	return j, err
}

var _ broker.ReadySource = (*readySource)(nil)

func (s *readySource) TryNext(maxPayload int) (*broker.Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ready) == 0 || (maxPayload >= 0 && len(s.ready[0].Payload) > maxPayload) {
		return nil, false
	}
	j := s.ready[0]
	s.ready = s.ready[1:]
	return j, true
}

func (s *readySource) add(jobs ...*broker.Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = append(s.ready, jobs...)
}

func (s *readySource) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready)
}

// setupPrefetch starts a one-worker pool of mode workers (prefetch-fifo or
// sdk-fifo) fed by a readySource, and runs one short job so that the pool
// knows its jobs are short. Then the worker runs j1, which waits on the
// FIFO returned, with j2 and j3 queued behind it; j4 waits in the source.
func setupPrefetch(t *testing.T, b *testBundle, mode string) (*readySource, *broker.Pool, string) {
	t.Helper()
	src, pool, fifo := startPrefetch(t, b, mode, `0`)
	b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		return len(ws) > 0 && ws[0].Job == "j1" && ws[0].Queued == 2
	}, "j2 and j3 not queued behind j1")
	require.Equal(t, 1, src.left())
	return src, pool, fifo
}

// startPrefetch starts the pool of setupPrefetch, runs j0 with payload
// first, then gives the worker j1 with j2, j3 and j4 in the source.
func startPrefetch(t *testing.T, b *testBundle, mode, first string) (*readySource, *broker.Pool, string) {
	t.Helper()
	return startPrefetchWith(t, b, mode, []string{first}, 2, testJob("j2", `2`), testJob("j3", `3`), testJob("j4", `4`))
}

// startPrefetchWith is startPrefetch with the payloads of the jobs run
// first (j0, one after the other), an SDK worker's prefetch and the jobs in
// the source when j1 starts.
func startPrefetchWith(t *testing.T, b *testBundle, mode string, first []string, prefetch int, held ...*broker.Job) (*readySource, *broker.Pool, string) {
	t.Helper()
	src, pool := startPrefetchPool(t, b, mode, prefetch, held...)
	for _, payload := range first {
		b.submit(t, "j0", payload)
		require.Equal(t, "j0", b.outcome(t).job.ID)
	}
	fifo := mkfifo(t, b.dir)
	// The held jobs become ready as Next hands out j1: the queue is filled
	// behind j1 as soon as the worker has it.
	b.submit(t, "j1", `"`+fifo+`"`)
	return src, pool, fifo
}

// startPrefetchPool starts a pool of one worker of mode with prefetch,
// whose source holds held until j1 is handed out.
func startPrefetchPool(t *testing.T, b *testBundle, mode string, prefetch int, held ...*broker.Job) (*readySource, *broker.Pool) {
	t.Helper()
	src := &readySource{Source: b.source(), heldFor: "j1", held: held}
	spec := b.spec(mode)
	spec.Env = append(spec.Env, fmt.Sprintf("CONDUCTOR_PREFETCH=%d", prefetch))
	cfg := b.config(spec)
	cfg.Source = src
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	t.Cleanup(pool.Stop)
	return src, pool
}

func testJob(id, payload string) *broker.Job {
	return &broker.Job{ID: id, Type: "test", Payload: json.RawMessage(payload), Attempt: 1}
}

func TestPool_PrefetchQueuesShortJobs(t *testing.T) {
	b := newBundle(t)
	_, _, fifo := setupPrefetch(t, b, "prefetch-fifo")

	// j2 and j3 went to the worker while it runs j1; j4 waits: the
	// prefetch is 2.
	release(t, fifo)

	want := map[string]string{"j1": `"from the fifo"`, "j2": `2`, "j3": `3`, "j4": `4`}
	var last time.Time
	for _, id := range []string{"j1", "j2", "j3", "j4"} {
		e := b.outcome(t)
		require.Equal(t, id, e.job.ID, "jobs end in the order given")
		require.Empty(t, e.out.Err)
		require.False(t, e.out.NotStarted)
		require.JSONEq(t, want[id], string(e.out.Result))
		require.False(t, e.out.Started.Before(last), "%s started before the job ahead of it ended", id)
		last = e.out.Ended
	}
}

// A worker that dies with jobs queued: the running job crashed, the queued
// ones never started, and none is lost.
func TestPool_CrashWithQueuedJobs(t *testing.T) {
	b := newBundle(t)
	_, pool, _ := setupPrefetch(t, b, "prefetch-fifo")

	require.NoError(t, syscall.Kill(pool.Workers()[0].PID, syscall.SIGKILL))

	got := map[string]broker.Outcome{}
	for range 3 {
		e := b.outcome(t)
		got[e.job.ID] = e.out
	}
	require.True(t, got["j1"].Crashed, "j1: %+v", got["j1"])
	for _, id := range []string{"j2", "j3"} {
		require.True(t, got[id].NotStarted, "%s: %+v", id, got[id])
		require.False(t, got[id].Crashed, id)
	}
	// The replacement takes j4, then what comes next.
	require.Equal(t, "j4", b.outcome(t).job.ID)
}

// release lets the job waiting on fifo end with "from the fifo".
func release(t *testing.T, fifo string) {
	t.Helper()
	f := openFIFO(t, fifo)
	_, err := f.WriteString("from the fifo")
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func TestPool_CancelQueuedJob(t *testing.T) {
	b := newBundle(t)
	_, pool, fifo := setupPrefetch(t, b, "sdk-fifo")

	require.True(t, pool.Cancel("j2"), "the pool does not see the queued job")

	e := b.outcome(t)
	require.Equal(t, "j2", e.job.ID)
	require.True(t, e.out.NotStarted, "%+v", e.out)
	require.Contains(t, e.out.Err, "cancelled")
	release(t, fifo)
	for _, id := range []string{"j1", "j3", "j4"} {
		e := b.outcome(t)
		require.Equal(t, id, e.job.ID)
		require.Empty(t, e.out.Err)
	}
}

// A worker that stops on its own (SIGTERM: the SDK says busy, finishes its
// job and exits) leaves its queued jobs: they never started, and none of
// them counts as crashed.
func TestPool_WorkerStopsWithQueuedJobs(t *testing.T) {
	b := newBundle(t)
	_, pool, fifo := setupPrefetch(t, b, "sdk-fifo")
	w := pool.Workers()[0]

	require.NoError(t, syscall.Kill(w.PID, syscall.SIGTERM))
	// The signal reaches the SDK on its own time: j1 must end after its
	// busy, or the SDK runs j2 in between, as it may.
	b.log.wait(t, "worker said busy", "queued=2")
	require.Equal(t, "j1", pool.Workers()[0].Job)
	release(t, fifo)

	got := map[string]broker.Outcome{}
	for range 3 {
		e := b.outcome(t)
		got[e.job.ID] = e.out
	}
	require.Empty(t, got["j1"].Err)
	require.False(t, got["j1"].Crashed)
	for _, id := range []string{"j2", "j3"} {
		require.True(t, got[id].NotStarted, "%s: %+v", id, got[id])
		require.False(t, got[id].Crashed, "%s: %+v", id, got[id])
	}
}

// A worker's queue holds what it runs in about 20ms (flow.ShortJob): behind
// a job of 11ms, one job, though the worker asked for 2. The pool judges by
// the run time it measured, which a loaded machine stretches: over 20ms,
// the worker is handed nothing ahead.
func TestPool_PrefetchBoundedByRunTime(t *testing.T) {
	b := newBundle(t)
	src, pool := startPrefetchPool(t, b, "prefetch-fifo", 2, testJob("j2", `2`), testJob("j3", `3`), testJob("j4", `4`))
	b.submit(t, "j0", `{"sleep":"11ms"}`)
	e := b.outcome(t)
	require.Equal(t, "j0", e.job.ID)
	ran := e.out.Ended.Sub(e.out.Started)
	require.GreaterOrEqual(t, ran, 11*time.Millisecond)
	want := flow.Queue(2, ran)
	fifo := mkfifo(t, b.dir)
	b.submit(t, "j1", `"`+fifo+`"`)

	if want == 0 {
		t.Logf("j0 ran %s here, over %s: nothing is handed ahead", ran, flow.ShortJob)
		b.waitWorkers(t, pool, func(ws []broker.Worker) bool { return len(ws) > 0 && ws[0].Job == "j1" }, "j1 never ran")
		require.Never(t, func() bool { return pool.Workers()[0].Queued > 0 || src.left() < 3 }, 100*time.Millisecond, 5*time.Millisecond)
	} else {
		require.Equal(t, 1, want, "j0 ran %s", ran)
		// The count shows once the queue is filled, in one step.
		b.waitWorkers(t, pool, func(ws []broker.Worker) bool { return len(ws) > 0 && ws[0].Queued > 0 }, "nothing queued")
		require.Equal(t, 1, pool.Workers()[0].Queued)
		require.Equal(t, 2, src.left())
	}
	release(t, fifo)
	for _, id := range []string{"j1", "j2", "j3", "j4"} {
		require.Equal(t, id, b.outcome(t).job.ID)
	}
}

// The jobs queued in a worker stay within about 32 KiB of messages as
// written, whatever its prefetch, so that writing them never blocks on a
// full pipe.
func TestPool_PrefetchBoundedByBytes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string
		queued  int
	}{
		// 3,000 bytes of payload, about 3,050 with the message around it:
		// 10 fit in 32 KiB, an 11th would not.
		{"plain", `"` + strings.Repeat("x", 2998) + `"`, 10},
		// 500 bytes of payload that JSON would escape to 3,000 ("\u003c")
		// in a line: the SDK's worker takes payloads framed, as they are,
		// so the 20 messages of about 550 bytes all fit.
		{"framed", `"` + strings.Repeat("<", 500) + `"`, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBundle(t)
			var held []*broker.Job
			for i := range 20 {
				held = append(held, testJob(fmt.Sprintf("b%02d", i), tc.payload))
			}
			// Enough short jobs first that the queue is not bounded by run time.
			src, pool, fifo := startPrefetchWith(t, b, "sdk-fifo", slices.Repeat([]string{`0`}, 30), 64, held...)
			b.waitWorkers(t, pool, func(ws []broker.Worker) bool { return len(ws) > 0 && ws[0].Queued > 0 }, "nothing queued")
			require.Equal(t, tc.queued, pool.Workers()[0].Queued)
			require.Equal(t, 20-tc.queued, src.left())
			release(t, fifo)
			require.Equal(t, "j1", b.outcome(t).job.ID)
			for i := range 20 {
				e := b.outcome(t)
				require.Equal(t, fmt.Sprintf("b%02d", i), e.job.ID)
				require.Empty(t, e.out.Err)
				require.False(t, e.out.NotStarted)
			}
		})
	}
}

// A worker whose queue ran dry, given a job the host already holds, gets
// the held jobs behind it queued at once: it does not go on taking one job
// at a time.
func TestPool_PrefetchResumesAfterQueueRanDry(t *testing.T) {
	b := newBundle(t)
	// j1 runs (until its FIFO is written) with nothing held to queue,
	// after enough short jobs that the queue is not bounded by run time.
	src, pool, first := startPrefetchWith(t, b, "sdk-fifo", slices.Repeat([]string{`0`}, 10), 2)
	second := filepath.Join(b.dir, "fifo2")
	require.NoError(t, syscall.Mkfifo(second, 0o600))
	src.add(testJob("k1", `"`+second+`"`), testJob("k2", `2`), testJob("k3", `3`))
	release(t, first)
	require.Equal(t, "j1", b.outcome(t).job.ID)
	// k1 goes to the idle worker, k2 and k3 behind it while it runs.
	b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		return len(ws) > 0 && ws[0].Job == "k1" && ws[0].Queued == 2
	}, "k2 and k3 not queued behind k1")
	release(t, second)
	for _, id := range []string{"k1", "k2", "k3"} {
		require.Equal(t, id, b.outcome(t).job.ID)
	}
}
