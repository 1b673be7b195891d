package broker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// waitLimit bounds every wait of a test on the pool; reaching it fails the
// test instead of hanging it.
const waitLimit = 15 * time.Second

type doneEvent struct {
	job *broker.Job
	out broker.Outcome
}

type testBundle struct {
	dir  string
	jobs chan *broker.Job // handed to the pool by Next, one per call
	done chan doneEvent   // every Done, in order
	log  *testLog

	pending     atomic.Int32  // Next calls in flight
	intakeEnded chan struct{} // closed when a Next returns because its ctx ended
	endOnce     sync.Once

	// workers fires at every change of what Workers returns, in every pool
	// made from config (a test signal of the pool).
	workers broadcast
}

func newBundle(t *testing.T) *testBundle {
	t.Helper()
	return &testBundle{
		dir:         t.TempDir(),
		jobs:        make(chan *broker.Job),
		done:        make(chan doneEvent, 100),
		log:         &testLog{t: t},
		intakeEnded: make(chan struct{}),
	}
}

// spec is a one-worker pool of fake workers of mode.
func (b *testBundle) spec(mode string) broker.Spec {
	return broker.Spec{
		Name:  "test",
		Count: 1,
		Cmd:   []string{os.Args[0], "-test.run=^$"},
		Env: []string{
			envWorker + "=" + mode,
			envState + "=" + filepath.Join(b.dir, "state"),
			// Under -race, a worker exiting on its own would otherwise
			// linger a second (the race runtime's atexit_sleep_ms).
			"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
		},
		ReadyTimeout: 10 * time.Second,
		StopTimeout:  5 * time.Second,
		KillTimeout:  2 * time.Second,
	}
}

func (b *testBundle) config(spec broker.Spec) broker.Config {
	cfg := broker.Config{Spec: spec, Source: b.source(), Host: "test-host", Logger: b.log.logger()}
	broker.OnWorkersChanged(&cfg, b.workers.fire)
	return cfg
}

func (b *testBundle) source() broker.Source {
	return broker.SourceFuncs{
		NextFunc: func(ctx context.Context) (*broker.Job, error) {
			b.pending.Add(1)
			// Once intakeEnded is closed, this call no longer counts.
			ended := func() error {
				b.pending.Add(-1)
				b.endOnce.Do(func() { close(b.intakeEnded) })
				return ctx.Err()
			}
			if ctx.Err() != nil {
				// Cancelled before it ran: a job waiting in submit must not
				// win the select below.
				return nil, ended()
			}
			select {
			case j := <-b.jobs:
				b.pending.Add(-1)
				return j, nil
			case <-ctx.Done():
				return nil, ended()
			}
		},
		DoneFunc: func(j *broker.Job, out broker.Outcome) { b.done <- doneEvent{job: j, out: out} },
	}
}

// setup starts a pool of spec, stopped when the test ends.
func setup(t *testing.T, spec broker.Spec, b *testBundle) *broker.Pool {
	t.Helper()
	pool, err := broker.NewPool(b.config(spec))
	require.NoError(t, err)
	require.NoError(t, pool.Start(context.Background()))
	t.Cleanup(pool.Stop)
	return pool
}

// submit hands a job to the next worker that asks.
func (b *testBundle) submit(t *testing.T, id, payload string) *broker.Job {
	t.Helper()
	j := &broker.Job{ID: id, Type: "test", Payload: json.RawMessage(payload), Attempt: 1}
	select {
	case b.jobs <- j:
		return j
	case <-time.After(waitLimit):
		t.Fatalf("no worker asked for job %s", id)
		return nil
	}
}

// outcome returns the next Done.
func (b *testBundle) outcome(t *testing.T) doneEvent {
	t.Helper()
	select {
	case e := <-b.done:
		return e
	case <-time.After(waitLimit):
		t.Fatal("no job ended")
		return doneEvent{}
	}
}

// testLog is a slog destination that goes to t.Log and can be searched.
type testLog struct {
	t       *testing.T
	mu      sync.Mutex
	lines   []string
	written broadcast // fires at every line
}

func (l *testLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *testLog) Write(b []byte) (int, error) {
	line := strings.TrimSuffix(string(b), "\n")
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.mu.Unlock()
	l.written.fire()
	l.t.Log(line)
	return len(b), nil
}

// wait waits for a line that contains every one of subs, and returns it.
func (l *testLog) wait(t *testing.T, subs ...string) string {
	t.Helper()
	var line string
	l.written.waitFor(t, func() bool { line = l.find(subs...); return line != "" }, "no log line with %q", subs)
	return line
}

// find returns the first line that contains every one of subs.
func (l *testLog) find(subs ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if containsAll(line, subs) {
			return line
		}
	}
	return ""
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// requireGone fails unless the process pid no longer exists.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "process %d outlived the pool", pid)
}

// readyWorkers waits until every worker of pool, made from b's config, is
// ready and returns them.
func readyWorkers(t *testing.T, b *testBundle, pool *broker.Pool) []broker.Worker {
	t.Helper()
	return b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		for _, w := range ws {
			if w.State != broker.WorkerReady || w.PID == 0 {
				return false
			}
		}
		return true
	}, "workers not ready")
}

// waitWorkers waits until cond holds for the workers of pool, made from
// b's config, and returns them. It tests cond at each change the pool
// signals: no polling.
func (b *testBundle) waitWorkers(t *testing.T, pool *broker.Pool, cond func([]broker.Worker) bool, msgAndArgs ...any) []broker.Worker {
	t.Helper()
	var ws []broker.Worker
	b.workers.waitFor(t, func() bool { ws = pool.Workers(); return cond(ws) }, msgAndArgs...)
	return ws
}

// waitJob waits until the first worker of pool, made from b's config, runs
// job id.
func (b *testBundle) waitJob(t *testing.T, pool *broker.Pool, id string) broker.Worker {
	t.Helper()
	return b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		return len(ws) > 0 && ws[0].Job == id
	}, "no worker runs job %s", id)[0]
}

// broadcast is what a test waits on instead of polling: fire wakes every
// waiter. The pool fires one (its workersChanged test signal, a
// no-op in production), the test's logger and event log others.
type broadcast struct {
	mu sync.Mutex
	c  chan struct{} // closed by the next fire; nil until someone waits
}

func (s *broadcast) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		close(s.c)
		s.c = nil
	}
}

// next returns a channel closed by the next fire.
func (s *broadcast) next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		s.c = make(chan struct{})
	}
	return s.c
}

// waitFor waits until cond holds, testing it again at each fire, and
// fails the test after waitLimit.
func (s *broadcast) waitFor(t *testing.T, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		fired := s.next() // before cond: a change while cond runs is not missed
		if cond() {
			return
		}
		select {
		case <-fired:
		case <-timeout.C:
			require.FailNow(t, "timed out after "+waitLimit.String(), msgAndArgs...)
		}
	}
}

// mkfifo returns the path of a new FIFO.
func mkfifo(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(path, 0o600))
	return path
}

// openFIFO opens path for writing, which waits for the worker to open it
// for reading: it then holds its job.
func openFIFO(t *testing.T, path string) *os.File {
	t.Helper()
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			panic(err)
		}
		opened <- f
	}()
	select {
	case f := <-opened:
		return f
	case <-time.After(waitLimit):
		t.Fatal("worker never opened the FIFO")
		return nil
	}
}
