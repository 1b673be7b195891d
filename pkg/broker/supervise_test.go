package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// eventLog collects a pool's events.
type eventLog struct {
	mu     sync.Mutex
	events []broker.Event
	added  broadcast // fires at every event
}

func (l *eventLog) add(e broker.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	l.added.fire()
}

// all returns the events of kind so far ("" for every kind).
func (l *eventLog) all(kind broker.EventKind) []broker.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []broker.Event
	for _, e := range l.events {
		if kind == "" || e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// wait waits for an event of kind that match accepts, and returns it.
func (l *eventLog) wait(t *testing.T, kind broker.EventKind, match func(broker.Event) bool) broker.Event {
	t.Helper()
	var found broker.Event
	l.added.waitFor(t, func() bool {
		for _, e := range l.all(kind) {
			if match == nil || match(e) {
				found = e
				return true
			}
		}
		return false
	}, "no %s event", kind)
	return found
}

// setupEvents starts a pool of spec whose events go to the returned log;
// opts change its Config first.
func setupEvents(t *testing.T, spec broker.Spec, b *testBundle, opts ...func(*broker.Config)) (*broker.Pool, *eventLog) {
	t.Helper()
	ev := &eventLog{}
	cfg := b.config(spec)
	cfg.OnEvent = ev.add
	for _, opt := range opts {
		opt(&cfg)
	}
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(context.Background()))
	t.Cleanup(pool.Stop)
	return pool, ev
}

// readyN waits until exactly n workers of pool, made from b's config,
// run, all ready, and returns them.
func readyN(t *testing.T, b *testBundle, pool *broker.Pool, n int) []broker.Worker {
	t.Helper()
	return b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		if len(ws) != n {
			return false
		}
		for _, w := range ws {
			if w.State != broker.WorkerReady || w.PID == 0 {
				return false
			}
		}
		return true
	}, "want %d ready workers", n)
}

// withCheckInterval makes the pool look for workers to recycle every d.
func withCheckInterval(d time.Duration) func(*broker.Config) {
	return func(cfg *broker.Config) { broker.SetCheckInterval(cfg, d) }
}

func pids(ws []broker.Worker) []int {
	var out []int
	for _, w := range ws {
		out = append(out, w.PID)
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func TestPool_Resize(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool, ev := setupEvents(t, b.spec("echo"), b)
	first := readyN(t, b, pool, 1)

	require.NoError(t, pool.Resize(ctxT(t), 3))
	ws := readyN(t, b, pool, 3)
	require.Equal(t, []int{0, 1, 2}, []int{ws[0].Index, ws[1].Index, ws[2].Index})
	require.Equal(t, first[0].PID, ws[0].PID, "resizing up keeps the running worker")
	require.Equal(t, 3, pool.Info().Count)
	require.Len(t, ev.all(broker.EventWorkerStart), 3)
	require.Equal(t, broker.ReasonResize, ev.all(broker.EventWorkerStart)[2].Reason)

	require.NoError(t, pool.Resize(ctxT(t), 1))
	ws = readyN(t, b, pool, 1)
	require.Equal(t, first[0].PID, ws[0].PID, "resizing down stops the highest indexes")
	requireGone(t, ev.all(broker.EventWorkerStart)[2].PID)
	exit := ev.wait(t, broker.EventWorkerExit, nil)
	require.Equal(t, broker.ReasonResize, exit.Reason)
	require.Equal(t, 1, ev.wait(t, broker.EventPoolResized, func(e broker.Event) bool { return e.Count == 1 }).Count)

	require.Error(t, pool.Resize(ctxT(t), -1))
}

func TestPool_DrainResume(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("echo")
	spec.Count = 2
	pool, ev := setupEvents(t, spec, b)
	before := readyN(t, b, pool, 2)

	require.NoError(t, pool.Drain(ctxT(t), 0))
	require.Equal(t, broker.PoolDrained, pool.Info().State)
	require.Empty(t, pool.Workers())
	for _, pid := range pids(before) {
		requireGone(t, pid)
	}
	ev.wait(t, broker.EventPoolDrained, nil)

	require.NoError(t, pool.Resume(ctxT(t)))
	after := readyN(t, b, pool, 2)
	require.Equal(t, broker.PoolRunning, pool.Info().State)
	b.submit(t, "j1", `1`)
	require.Equal(t, `1`, string(b.outcome(t).out.Result))
	require.NotContains(t, pids(before), after[0].PID)
	ev.wait(t, broker.EventPoolResumed, nil)
}

// TestPool_RecycleUnderLoad recycles a pool of 2 while jobs flow: every
// worker is replaced, every job ends exactly once and none crashed, and at
// no time are fewer than one (count-1) worker ready.
func TestPool_RecycleUnderLoad(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("echo")
	spec.Count = 2
	pool, ev := setupEvents(t, spec, b)
	before := readyN(t, b, pool, 2)

	const jobs = 300
	var minReady atomic.Int32
	minReady.Store(2)
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	defer halt() // on a failure too
	var watch sync.WaitGroup
	watch.Go(func() { // samples readiness while the recycle runs
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			n := int32(0)
			for _, w := range pool.Workers() {
				if w.PID != 0 && (w.State == broker.WorkerReady || w.State == broker.WorkerBusy) {
					n++
				}
			}
			if n < minReady.Load() {
				minReady.Store(n)
			}
		}
	})
	var feed sync.WaitGroup
	feed.Go(func() {
		for i := range jobs {
			b.submit(t, strconv.Itoa(i), strconv.Itoa(i))
		}
	})
	recycled := make(chan error, 1)
	go func() { recycled <- pool.Recycle(ctxT(t)) }()
	seen := map[string]bool{}
	for range jobs {
		e := b.outcome(t)
		require.False(t, e.out.Crashed, "job %s crashed: %s", e.job.ID, e.out.Err)
		if e.out.NotStarted {
			// Given back before it reached a worker: the Source hands it out again.
			b.submit(t, e.job.ID, string(e.job.Payload))
			e = b.outcome(t)
		}
		require.Equal(t, e.job.ID, string(e.out.Result))
		require.False(t, seen[e.job.ID], "job %s ended twice", e.job.ID)
		seen[e.job.ID] = true
	}
	feed.Wait()
	require.NoError(t, <-recycled)
	halt()
	watch.Wait()

	after := readyN(t, b, pool, 2)
	for _, w := range after {
		require.NotContains(t, pids(before), w.PID, "worker %d was not replaced", w.Index)
	}
	require.GreaterOrEqual(t, minReady.Load(), int32(1), "the pool dropped below count-1 ready workers")
	require.Len(t, seen, jobs)
	ev.wait(t, broker.EventPoolRecycled, nil)
	var reasons []broker.Reason
	for _, e := range ev.all(broker.EventWorkerExit) {
		reasons = append(reasons, e.Reason)
	}
	require.Equal(t, []broker.Reason{broker.ReasonRecycle, broker.ReasonRecycle}, reasons)
}

func TestPool_RecycleMaxJobs(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("echo")
	spec.MaxJobs = 3
	pool, ev := setupEvents(t, spec, b)
	readyN(t, b, pool, 1)

	ran := map[int]int{} // pid -> jobs
	for i := range 9 {
		b.submit(t, strconv.Itoa(i), `1`)
		e := b.outcome(t)
		require.Empty(t, e.out.Err)
		ran[e.out.PID]++
	}
	require.Len(t, ran, 3, "each worker runs max_jobs jobs, then is replaced")
	for pid, n := range ran {
		require.Equal(t, 3, n, "pid %d", pid)
	}
	ev.added.waitFor(t, func() bool { return len(ev.all(broker.EventWorkerExit)) >= 2 },
		"the first two workers were stopped once replaced")
}

func TestPool_RecycleAgeAndMemory(t *testing.T) {
	t.Parallel()
	t.Run("Age", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		spec.Recycle = 300 * time.Millisecond
		pool, ev := setupEvents(t, spec, b, withCheckInterval(20*time.Millisecond))
		first := readyN(t, b, pool, 1)
		e := ev.wait(t, broker.EventWorkerExit, nil)
		require.Equal(t, first[0].PID, e.PID)
		require.Equal(t, broker.ReasonRecycle, e.Reason)
		require.NotEqual(t, first[0].PID, readyN(t, b, pool, 1)[0].PID)
		require.NotEmpty(t, b.log.find("recycling worker", "up for more than recycle"))
	})
	// Without cgroups, max_rss recycles (with them it is a hard limit:
	// TestPool_CgroupMaxRSS).
	t.Run("Memory", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("alloc")
		spec.Env = append(spec.Env, "BROKER_TEST_ALLOC_MB=64")
		spec.MaxRSS = 32 << 20
		_, ev := setupEvents(t, spec, b, withCheckInterval(20*time.Millisecond), broker.NoCgroups)
		first := ev.wait(t, broker.EventWorkerStart, nil)
		e := ev.wait(t, broker.EventWorkerExit, nil)
		require.Equal(t, first.PID, e.PID)
		require.Equal(t, broker.ReasonRecycle, e.Reason)
		require.NotEmpty(t, b.log.find("recycling worker", "over max_rss"))
		ev.wait(t, broker.EventWorkerReady, func(r broker.Event) bool { return r.PID != first.PID }) // a new worker took its place
	})
}

func TestPool_Upgrade(t *testing.T) {
	t.Parallel()
	t.Run("Good", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		spec.Count = 2
		pool, ev := setupEvents(t, spec, b)
		before := readyN(t, b, pool, 2)
		newCmd := append(slices.Clone(spec.Cmd), "-test.count=1")
		require.NoError(t, pool.Upgrade(ctxT(t), newCmd, 100*time.Millisecond))
		after := readyN(t, b, pool, 2)
		for _, w := range after {
			require.Equal(t, 2, w.Version)
			require.NotContains(t, pids(before), w.PID)
		}
		require.Equal(t, newCmd, pool.Info().Cmd)
		require.Equal(t, newCmd, pool.Spec().Cmd)
		ev.wait(t, broker.EventPoolUpgraded, nil)
		require.Equal(t, broker.ReasonUpgrade, ev.all(broker.EventWorkerStart)[2].Reason)
	})
	t.Run("UpdateSpec", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		pool, _ := setupEvents(t, spec, b)
		before := readyN(t, b, pool, 1)

		limits := spec
		limits.MaxRestartsPerMinute = 7
		require.NoError(t, pool.Update(ctxT(t), limits, time.Millisecond))
		require.Equal(t, pids(before), pids(readyN(t, b, pool, 1)), "a new limit needs no new process")
		require.Equal(t, 7, pool.Spec().MaxRestartsPerMinute)

		changed := spec
		changed.Env = append(slices.Clone(spec.Env), "BROKER_TEST_EXTRA=reloaded")
		changed.Count = 2
		require.NoError(t, pool.Update(ctxT(t), changed, time.Millisecond))
		after := readyN(t, b, pool, 2)
		require.NotContains(t, pids(after), before[0].PID)
		for range 2 {
			b.submit(t, "env", `"env"`)
			require.Contains(t, string(b.outcome(t).out.Result), `"extra":"reloaded"`)
		}
		require.Equal(t, 2, after[0].Version)

		moved := spec
		moved.Listen = "127.0.0.1:0"
		require.ErrorContains(t, pool.Update(ctxT(t), moved, 0), "name, protocol and listen cannot change")
	})
	t.Run("MissingCommand", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool, _ := setupEvents(t, b.spec("echo"), b)
		readyN(t, b, pool, 1)
		err := pool.Upgrade(ctxT(t), []string{"/no/such/worker"}, 0)
		require.ErrorContains(t, err, `upgrade pool "test": command "/no/such/worker"`)
		require.Equal(t, 1, readyN(t, b, pool, 1)[0].Version)
	})
	t.Run("NeverReadyRollsBack", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		spec.Count = 2
		pool, ev := setupEvents(t, spec, b)
		before := readyN(t, b, pool, 2)
		err := pool.Upgrade(ctxT(t), []string{"/bin/false"}, time.Second)
		require.ErrorContains(t, err, "rolled back: new worker exited before it was ready (exit status 1)")
		require.Equal(t, pids(before), pids(readyN(t, b, pool, 2)), "the old workers keep serving")
		rb := ev.wait(t, broker.EventPoolRollback, nil)
		require.Contains(t, rb.Error, "exited before it was ready")
		info := pool.Info()
		require.Equal(t, spec.Cmd, info.Cmd)
		require.Contains(t, info.Error, "upgrade rolled back")
	})
	t.Run("UnhealthyRollsBack", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		pool, ev := setupEvents(t, spec, b)
		before := readyN(t, b, pool, 1)
		// Ready at once, dead 200ms later: within the health period.
		bad := []string{"/bin/sh", "-c", `BROKER_TEST_WORKER=crash-later exec "$0" -test.run=^$`, os.Args[0]}
		err := pool.Upgrade(ctxT(t), bad, 5*time.Second)
		require.ErrorContains(t, err, "exited within the 5s health period (exit status 3)")
		require.Equal(t, pids(before), pids(readyN(t, b, pool, 1)))
		ev.wait(t, broker.EventPoolRollback, nil)
		b.submit(t, "after", `2`)
		require.Equal(t, before[0].PID, b.outcome(t).out.PID)
	})
}

func TestPool_CrashLoopBreaker(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("never-ready")
	spec.ReadyTimeout = 50 * time.Millisecond
	spec.MaxRestartsPerMinute = 2
	spec.RestartDelay = time.Millisecond
	pool, ev := setupEvents(t, spec, b)
	failed := ev.wait(t, broker.EventPoolFailed, nil)
	require.Contains(t, failed.Error, "restarted 2 times within 1m0s")
	require.WithinDuration(t, time.Now().Add(time.Minute), failed.RetryAt, 5*time.Second)
	info := pool.Info()
	require.Equal(t, broker.PoolFailed, info.State)
	require.Equal(t, failed.RetryAt, info.RetryAt.UTC())
	require.Len(t, ev.all(broker.EventWorkerStart), 3, "the first start and 2 restarts, then none")
	// The slot shows its backoff once it has taken the breaker's verdict,
	// which may come just after the event.
	require.Eventually(t, func() bool { return pool.Workers()[0].State == broker.WorkerBackoff }, waitLimit, time.Millisecond,
		"state %s", pool.Workers()[0].State)
}

func TestPool_Events(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool, ev := setupEvents(t, b.spec("message"), b)
	ws := readyN(t, b, pool, 1)

	msg := ev.wait(t, broker.EventWorkerMessage, nil)
	require.JSONEq(t, `{"hello":"world"}`, string(msg.Data))
	require.Equal(t, ws[0].PID, msg.PID)
	start := ev.wait(t, broker.EventWorkerStart, nil)
	require.Equal(t, broker.Event{Time: start.Time, Kind: "start", Host: "test-host", Pool: "test", PID: ws[0].PID, Reason: broker.ReasonStart}, start)
	ev.wait(t, broker.EventWorkerReady, nil)

	require.NoError(t, syscall.Kill(ws[0].PID, syscall.SIGKILL))
	exit := ev.wait(t, broker.EventWorkerExit, nil)
	require.Equal(t, broker.ReasonFailure, exit.Reason)
	require.Equal(t, "signal: killed", exit.Exit)
	require.Equal(t, "SIGKILL", exit.Signal)
	require.Equal(t, -1, exit.Code)
	require.False(t, exit.OOM)
	restart := ev.wait(t, broker.EventWorkerStart, func(e broker.Event) bool { return e.Reason == broker.ReasonRestart })
	w := readyN(t, b, pool, 1)[0]
	require.Equal(t, restart.PID, w.PID)
	require.Equal(t, "signal: killed", w.LastExit)
	require.Equal(t, 1, w.Restarts)

	pool.Stop()
	ev.wait(t, broker.EventPoolStopped, nil)
	last := ev.all(broker.EventWorkerExit)
	require.Equal(t, broker.ReasonStop, last[len(last)-1].Reason)
	require.Equal(t, 0, last[len(last)-1].Code)
}

func TestPool_OnOutput(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("service")
	spec.Protocol = broker.ProtocolNone
	lines := make(chan broker.LogLine, 10)
	cfg := b.config(spec)
	cfg.OnOutput = func(l broker.LogLine) { lines <- l }
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(context.Background()))
	t.Cleanup(pool.Stop)
	w := readyN(t, b, pool, 1)[0]
	select {
	case l := <-lines:
		require.Equal(t, broker.LogLine{Time: l.Time, Host: "test-host", Pool: "test", PID: w.PID, Stream: "stdout", Line: "service up"}, l)
	case <-time.After(waitLimit):
		t.Fatal("no output line")
	}
}

// TestPool_ServiceRecycleUnderLoad recycles 3 HTTP servers sharing one
// port while clients keep sending requests: not one fails.
func TestPool_ServiceRecycleUnderLoad(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("http")
	spec.Protocol = broker.ProtocolNone
	spec.Count = 3
	spec.Listen = "127.0.0.1:0"
	pool, ev := setupEvents(t, spec, b)
	before := readyN(t, b, pool, 3)
	url := "http://" + pool.ListenAddr().String() + "/"

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var load sync.WaitGroup
	for range 4 {
		load.Go(func() {
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	require.Eventually(t, func() bool { return ok.Load() > 50 }, waitLimit, time.Millisecond)
	require.NoError(t, pool.Recycle(ctxT(t)))
	n := ok.Load()
	require.Eventually(t, func() bool { return ok.Load() > n+50 }, waitLimit, time.Millisecond)
	close(stop)
	load.Wait()

	require.Zero(t, failed.Load(), "failed requests (first: %v) of %d", firstErr.Load(), ok.Load()+failed.Load())
	after := readyN(t, b, pool, 3)
	for _, w := range after {
		require.NotContains(t, pids(before), w.PID)
	}
	ev.wait(t, broker.EventPoolRecycled, nil)
	t.Logf("%d requests during the recycle, none failed", ok.Load())
}

func TestPool_JobTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    string
		err     string
		crashed bool
	}{
		{"cancel-job", "job timed out after 100ms (cancelled by workerd)", false},
		{"ignore-cancel", "job timed out after 100ms (worker exited: signal: terminated", true},
		{"ignore-sigterm", "job timed out after 100ms (worker exited: signal: killed", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			b := newBundle(t)
			spec := b.spec(tc.mode)
			spec.JobTimeout = 100 * time.Millisecond
			spec.KillTimeout = 200 * time.Millisecond
			spec.MaxRestartsPerMinute = 1 // a timeout kill is no failure of the pool
			pool, ev := setupEvents(t, spec, b)
			first := readyN(t, b, pool, 1)[0]
			for i := range 2 {
				b.submit(t, strconv.Itoa(i), `1`)
				e := b.outcome(t)
				require.True(t, e.out.TimedOut)
				require.Equal(t, tc.crashed, e.out.Crashed)
				require.False(t, e.out.Permanent)
				require.True(t, strings.HasPrefix(e.out.Err, tc.err), e.out.Err)
				require.GreaterOrEqual(t, e.out.Ended.Sub(e.out.Started), 100*time.Millisecond)
			}
			w := readyN(t, b, pool, 1)[0]
			if tc.crashed {
				require.NotEqual(t, first.PID, w.PID)
				require.Equal(t, 2, w.Restarts)
				require.Empty(t, ev.all(broker.EventPoolFailed))
			} else {
				require.Equal(t, first.PID, w.PID, "a worker that stops its job on cancel keeps serving")
			}
		})
	}
	t.Run("PerJob", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool, _ := setupEvents(t, b.spec("cancel-job"), b)
		readyN(t, b, pool, 1)
		j := &broker.Job{ID: "short", Type: "test", Payload: json.RawMessage(`1`), Attempt: 1, Timeout: 50 * time.Millisecond}
		select {
		case b.jobs <- j:
		case <-time.After(waitLimit):
			t.Fatal("no worker asked for the job")
		}
		e := b.outcome(t)
		require.Equal(t, "job timed out after 50ms (cancelled by workerd)", e.out.Err)
	})
}

func TestPool_Cancel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    string
		err     string
		crashed bool
	}{
		{"cancel-job", "cancelled by workerd", false},
		{"ignore-cancel", "job cancelled (worker exited: signal: terminated", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			b := newBundle(t)
			spec := b.spec(tc.mode)
			spec.KillTimeout = 200 * time.Millisecond
			pool, _ := setupEvents(t, spec, b)
			first := readyN(t, b, pool, 1)[0]
			require.False(t, pool.Cancel("j1"), "no worker holds it yet")
			b.submit(t, "j1", `1`)
			b.waitJob(t, pool, "j1")
			require.True(t, pool.Cancel("j1"))
			e := b.outcome(t)
			require.Equal(t, tc.crashed, e.out.Crashed)
			require.True(t, strings.HasPrefix(e.out.Err, tc.err), e.out.Err)
			w := readyN(t, b, pool, 1)[0]
			require.Equal(t, tc.crashed, w.PID != first.PID)
		})
	}
}

func TestPool_CrashReportsLastRSS(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool, _ := setupEvents(t, b.spec("sleep-job"), b)
	readyN(t, b, pool, 1)
	b.submit(t, "j1", `1`)
	b.waitJob(t, pool, "j1")
	w := pool.Workers()[0] // reads its RSS, which the crash report quotes
	require.Positive(t, w.RSS)
	require.NoError(t, syscall.Kill(w.PID, syscall.SIGKILL))
	e := b.outcome(t)
	require.True(t, e.out.Crashed)
	require.False(t, e.out.OOMKilled)
	require.Regexp(t, `^worker exited: signal: killed; rss \d+ MiB at its last check`, e.out.Err)
}
