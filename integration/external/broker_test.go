package external_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// waitLimit bounds every wait for a real process.
const waitLimit = 30 * time.Second

// poolBundle is what a pool test works with besides the pool.
type poolBundle struct {
	host, self string
	jobs       chan *broker.Job // what Source.Next hands out
	outcomes   chan doneJob     // what Source.Done reports
	watch      *poolWatch       // what OnEvent reports
}

type doneJob struct {
	job *broker.Job
	out broker.Outcome
}

// setupPool starts a pool of count processes of this test binary playing
// the fake worker, fed from the bundle's jobs channel, and stops it at
// cleanup.
func setupPool(t *testing.T, fake string, count int) (*broker.Pool, *poolBundle) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	b := &poolBundle{
		host:     "ext-host",
		self:     self,
		jobs:     make(chan *broker.Job),
		outcomes: make(chan doneJob, 64),
		watch:    newPoolWatch("ext-host", fake),
	}
	pool, err := broker.NewPool(broker.Config{
		Spec: broker.Spec{
			Name: fake, Count: count, Cmd: []string{self}, Env: workerEnv(fake),
			StopTimeout: 10 * time.Second, KillTimeout: 5 * time.Second,
		},
		Source: broker.SourceFuncs{
			NextFunc: func(ctx context.Context) (*broker.Job, error) {
				select {
				case j := <-b.jobs:
					return j, nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			},
			DoneFunc: func(j *broker.Job, out broker.Outcome) { b.outcomes <- doneJob{j, out} },
		},
		Host:    b.host,
		Logger:  slog.New(slog.NewTextHandler(t.Output(), nil)),
		OnEvent: b.watch.onEvent,
	})
	require.NoError(t, err)
	require.Equal(t, broker.PoolNew, pool.Info().State)
	require.NoError(t, pool.Start(context.Background()))
	t.Cleanup(pool.Stop)
	return pool, b
}

// send hands job to the pool.
func (b *poolBundle) send(t *testing.T, job *broker.Job) {
	t.Helper()
	select {
	case b.jobs <- job:
	case <-time.After(waitLimit):
		t.Fatalf("no worker took job %s within %s", job.ID, waitLimit)
	}
}

// outcome waits for the next job the pool reports done.
func (b *poolBundle) outcome(t *testing.T) doneJob {
	t.Helper()
	select {
	case d := <-b.outcomes:
		return d
	case <-time.After(waitLimit):
		t.Fatalf("no job done within %s", waitLimit)
		return doneJob{}
	}
}

// poolWatch records what a pool's OnEvent reports, by kind.
type poolWatch struct {
	host, pool string

	mu      sync.Mutex    // guards the fields below
	changed chan struct{} // closed and replaced at every event
	starts  []broker.Event
	readies []broker.Event
	exits   []broker.Event
	stopped bool
	wrong   []string // events whose fields do not fit their kind
}

func newPoolWatch(host, pool string) *poolWatch {
	return &poolWatch{host: host, pool: pool, changed: make(chan struct{})}
}

// onEvent is the pool's Config.OnEvent: it must not block.
func (w *poolWatch) onEvent(e broker.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.Host != w.host || e.Pool != w.pool || e.Time.IsZero() {
		w.wrong = append(w.wrong, fmt.Sprintf("%s event of %s/%s at %v", e.Kind, e.Host, e.Pool, e.Time))
	}
	switch e.Kind {
	case broker.EventWorkerStart:
		if e.PID <= 0 || (e.Reason != broker.ReasonStart && e.Reason != broker.ReasonRestart) {
			w.wrong = append(w.wrong, fmt.Sprintf("start of worker %d: pid %d, reason %q", e.Index, e.PID, e.Reason))
		}
		w.starts = append(w.starts, e)
	case broker.EventWorkerReady:
		w.readies = append(w.readies, e)
	case broker.EventWorkerExit:
		if e.PID <= 0 || e.Exit == "" || e.Reason == "" {
			w.wrong = append(w.wrong, fmt.Sprintf("exit of worker %d: pid %d, exit %q, reason %q", e.Index, e.PID, e.Exit, e.Reason))
		}
		w.exits = append(w.exits, e)
	case broker.EventPoolStopped:
		w.stopped = true
	case broker.EventWorkerMessage, broker.EventPoolFailed, broker.EventPoolRecovered,
		broker.EventPoolDrained, broker.EventPoolResumed, broker.EventPoolResized,
		broker.EventPoolRecycled, broker.EventPoolUpgraded, broker.EventPoolRollback:
		w.wrong = append(w.wrong, fmt.Sprintf("unexpected %s event", e.Kind))
	default:
		w.wrong = append(w.wrong, fmt.Sprintf("unknown event kind %q", e.Kind))
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// wait waits until cond, called with the watch locked, holds.
func (w *poolWatch) wait(t *testing.T, what string, cond func(w *poolWatch) bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok, changed := cond(w), w.changed
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s within %s", what, waitLimit)
		}
	}
}

// check fails t with every event whose fields did not fit its kind.
func (w *poolWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	require.Empty(t, w.wrong)
}

// pids returns the pid of every worker process started, in start order.
func (w *poolWatch) pids() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var pids []int
	for _, e := range w.starts {
		pids = append(pids, e.PID)
	}
	return pids
}

// requireGone fails t if any of pids is still a process (no orphans).
func requireGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		err := syscall.Kill(pid, 0)
		require.Truef(t, errors.Is(err, syscall.ESRCH), "worker pid %d outlived its pool (kill 0: %v)", pid, err)
	}
}

func TestPool_RunsJobsAndReportsWorkers(t *testing.T) {
	t.Parallel()
	pool, b := setupPool(t, "squares", 2)
	b.watch.wait(t, "ready from both workers", func(w *poolWatch) bool { return len(w.readies) == 2 })

	info := pool.Info()
	require.Equal(t, "squares", info.Name)
	require.Equal(t, 2, info.Count)
	require.Equal(t, broker.ProtocolChannel, info.Protocol)
	require.Equal(t, broker.PoolRunning, info.State)
	require.Empty(t, info.Operation)
	require.Equal(t, []string{b.self}, info.Cmd)
	require.Empty(t, info.Error)
	require.True(t, info.RetryAt.IsZero())

	pids := b.watch.pids()
	require.Len(t, pids, 2)
	const n = 10
	for i := range n {
		b.send(t, &broker.Job{ID: fmt.Sprint("job-", i), Type: "squares", Payload: json.RawMessage(fmt.Sprint(i)), Attempt: 1})
	}
	for range n {
		d := b.outcome(t)
		var in, out int
		require.NoError(t, json.Unmarshal(d.job.Payload, &in))
		require.Emptyf(t, d.out.Err, "job %s", d.job.ID)
		require.NoError(t, json.Unmarshal(d.out.Result, &out))
		require.Equal(t, in*in, out)
		require.False(t, d.out.Crashed || d.out.TimedOut || d.out.NotStarted || d.out.Permanent || d.out.OOMKilled)
		require.Contains(t, pids, d.out.PID)
		require.Contains(t, []int{0, 1}, d.out.Index)
		require.False(t, d.out.Ended.Before(d.out.Started))
	}

	// The slots count a job done after reporting it: wait for the count.
	require.Eventually(t, func() bool {
		var done int64
		for _, w := range pool.Workers() {
			done += w.JobsDone
		}
		return done == n
	}, waitLimit, 10*time.Millisecond, "jobs done across the workers")
	workers := pool.Workers()
	require.Len(t, workers, 2)
	for i, w := range workers {
		require.Equal(t, b.host, w.Host)
		require.Equal(t, "squares", w.Pool)
		require.Equal(t, i, w.Index)
		require.Contains(t, pids, w.PID)
		require.Contains(t, []broker.WorkerState{broker.WorkerReady, broker.WorkerBusy}, w.State)
		require.Positive(t, w.RSS, "RSS read from /proc")
		require.Zero(t, w.Restarts)
		require.Empty(t, w.LastExit)
		require.True(t, w.LastExitAt.IsZero())
		require.False(t, w.Started.IsZero())
		require.Equal(t, 1, w.Version)
	}

	pool.Stop()
	select {
	case <-pool.Stopped():
	default:
		t.Fatal("Stopped not closed after Stop returned")
	}
	require.Equal(t, broker.PoolStopped, pool.Info().State)
	b.watch.wait(t, "stopped event", func(w *poolWatch) bool { return w.stopped })
	b.watch.check(t)
	b.watch.mu.Lock()
	exits := slices.Clone(b.watch.exits)
	b.watch.mu.Unlock()
	require.Len(t, exits, 2)
	for _, e := range exits {
		require.Contains(t, pids, e.PID)
		require.Equal(t, broker.ReasonStop, e.Reason)
		require.Zero(t, e.Code)
		require.Empty(t, e.Signal)
		require.False(t, e.OOM)
		require.Positive(t, e.Uptime)
	}
	requireGone(t, pids)
}

func TestPool_ReplacesCrashedWorker(t *testing.T) {
	t.Parallel()
	pool, b := setupPool(t, "crash-on-job", 1)
	b.watch.wait(t, "ready", func(w *poolWatch) bool { return len(w.readies) == 1 })
	first := b.watch.pids()[0]

	b.send(t, &broker.Job{ID: "doomed", Type: "crash-on-job", Payload: json.RawMessage(`1`), Attempt: 1})
	d := b.outcome(t)
	require.Equal(t, "doomed", d.job.ID)
	require.True(t, d.out.Crashed)
	require.Contains(t, d.out.Err, "exit status 3")
	require.Equal(t, first, d.out.PID)

	b.watch.wait(t, "a restarted worker's ready", func(w *poolWatch) bool { return len(w.readies) == 2 })
	b.watch.check(t)
	b.watch.mu.Lock()
	exit, restart := b.watch.exits[0], b.watch.starts[1]
	b.watch.mu.Unlock()
	require.Equal(t, first, exit.PID)
	require.Equal(t, broker.ReasonFailure, exit.Reason)
	require.Equal(t, 3, exit.Code)
	require.Equal(t, "exit status 3", exit.Exit)
	require.Equal(t, broker.ReasonRestart, restart.Reason)
	require.NotEqual(t, first, restart.PID)

	require.Eventually(t, func() bool {
		w := pool.Workers()[0]
		return w.PID == restart.PID && w.State == broker.WorkerReady
	}, waitLimit, 10*time.Millisecond, "the restarted worker ready in Workers")
	w := pool.Workers()[0]
	require.Equal(t, 1, w.Restarts)
	require.Contains(t, w.LastExit, "exit status 3")
	require.False(t, w.LastExitAt.IsZero())
	require.Zero(t, w.JobsDone)

	pool.Stop()
	requireGone(t, b.watch.pids())
}
