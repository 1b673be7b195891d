package broker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

func TestNewPool(t *testing.T) {
	t.Parallel()
	b := newBundle(t)

	spec := b.spec("echo")
	spec.Name = "bad name"
	_, err := broker.NewPool(b.config(spec))
	require.ErrorIs(t, err, broker.ErrBadSpec)

	_, err = broker.NewPool(broker.Config{Spec: b.spec("echo")})
	require.ErrorContains(t, err, `pool "test": a channel pool needs a Source`)

	spec = broker.Spec{Name: "test", Cmd: []string{"service"}, Protocol: broker.ProtocolNone}
	pool, err := broker.NewPool(broker.Config{Spec: spec})
	require.NoError(t, err)
	require.Equal(t, "test", pool.Name())
	spec.Count = broker.DefaultCount
	spec.ReadyTimeout = broker.DefaultReadyTimeout
	spec.StopTimeout = broker.DefaultStopTimeout
	spec.KillTimeout = broker.DefaultKillTimeout
	spec.MaxAttempts = broker.DefaultMaxAttempts
	spec.RestartDelay = broker.DefaultRestartDelay
	spec.RestartFactor = broker.DefaultRestartFactor
	spec.RestartMaxDelay = broker.DefaultRestartMaxDelay
	spec.RestartReset = broker.DefaultRestartReset
	spec.MaxFailedStarts = broker.DefaultMaxFailedStarts
	spec.FailedStartWindow = broker.DefaultFailedStartWindow
	require.Equal(t, spec, pool.Spec())
	require.Equal(t, broker.PoolInfo{Name: "test", Count: 1, Protocol: "none", State: broker.PoolNew, Cmd: []string{"service"}}, pool.Info())
}

func TestPool_Start(t *testing.T) {
	t.Parallel()

	t.Run("UnencodableJob", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("echo"), b)
		readyWorkers(t, b, pool)

		b.submit(t, "bad", "{not json")
		e := b.outcome(t)
		require.Equal(t, "bad", e.job.ID)
		require.True(t, e.out.Permanent)
		require.Equal(t, "payload is not valid JSON", e.out.Err, "what a worker reading payloads in the line cannot take")
		require.False(t, e.out.Crashed)

		// The worker was not blamed: it takes the next job, unrestarted.
		b.submit(t, "good", "7")
		e = b.outcome(t)
		require.Equal(t, "7", string(e.out.Result))
		require.Zero(t, pool.Workers()[0].Restarts)
	})

	t.Run("FramedPayloads", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("framed-echo"), b)
		readyWorkers(t, b, pool)

		// A framed worker gets its payloads as they are, JSON or not,
		// large (written from where it is) or small, with prefetch.
		big := `"` + strings.Repeat("x", 300<<10) + `"`
		payloads := []string{"{not json", big, "7", "line\n{\"op\":\"shutdown\"}\n"}
		for i, p := range payloads {
			b.submit(t, "job-"+strconv.Itoa(i), p)
		}
		got := map[string]string{}
		for range payloads {
			e := b.outcome(t)
			require.Empty(t, e.out.Err)
			var echoed string
			require.NoError(t, json.Unmarshal(e.out.Result, &echoed))
			got[e.job.ID] = echoed
		}
		for i, p := range payloads {
			require.Equal(t, p, got["job-"+strconv.Itoa(i)], "job %d", i)
		}
		require.Zero(t, pool.Workers()[0].Restarts)
	})

	t.Run("RunsJobs", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		spec.Count = 2
		pool := setup(t, spec, b)
		readyWorkers(t, b, pool)

		for i := range 10 {
			b.submit(t, "job-"+strconv.Itoa(i), strconv.Itoa(i*i))
		}
		pids := map[int]bool{}
		for range 10 {
			e := b.outcome(t)
			require.False(t, e.out.Crashed)
			require.Empty(t, e.out.Err)
			require.Equal(t, string(e.job.Payload), string(e.out.Result))
			require.NotZero(t, e.out.PID)
			require.False(t, e.out.Ended.Before(e.out.Started))
			pids[e.out.PID] = true
		}

		ws := pool.Workers()
		require.Len(t, ws, 2)
		var jobsDone int64
		for i, w := range ws {
			require.Equal(t, i, w.Index)
			require.Equal(t, "test-host", w.Host)
			require.Equal(t, "test", w.Pool)
			require.Equal(t, broker.WorkerReady, w.State)
			require.NotZero(t, w.PID)
			require.Positive(t, w.RSS)
			require.Zero(t, w.Restarts)
			require.False(t, w.Started.IsZero())
			jobsDone += w.JobsDone
			pids[w.PID] = true
		}
		require.EqualValues(t, 10, jobsDone)
		require.Equal(t, broker.PoolRunning, pool.Info().State)

		pool.Stop()
		require.Equal(t, broker.PoolStopped, pool.Info().State)
		for _, w := range pool.Workers() {
			require.Equal(t, broker.WorkerExited, w.State)
			require.Zero(t, w.PID)
		}
		for pid := range pids {
			requireGone(t, pid)
		}
	})

	t.Run("Environment", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("echo")
		spec.Env = append(spec.Env, "BROKER_TEST_EXTRA=extra value")
		spec.Dir = b.dir
		setup(t, spec, b)

		b.submit(t, "env", `"env"`)
		var got map[string]string
		require.NoError(t, json.Unmarshal(b.outcome(t).out.Result, &got))
		dir, err := filepath.EvalSymlinks(b.dir)
		require.NoError(t, err)
		require.Equal(t, map[string]string{
			"pool": "test", "index": "0", "host": "test-host", "protocol": "channel",
			"extra": "extra value", "dir": dir,
		}, got)
	})

	t.Run("RelativeToDir", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		require.NoError(t, os.Symlink(os.Args[0], filepath.Join(b.dir, "worker")))
		spec := b.spec("echo")
		spec.Cmd = []string{"./worker", "-test.run=^$"}
		spec.Dir = b.dir
		setup(t, spec, b)

		b.submit(t, "a", `1`)
		require.Equal(t, "1", string(b.outcome(t).out.Result))
	})

	t.Run("CommandNotFound", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		notExec := filepath.Join(b.dir, "not-executable")
		require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600))
		for _, tc := range []struct{ cmd, want string }{
			{"/nonexistent/worker", `broker: start pool "test": command "/nonexistent/worker": exec: "/nonexistent/worker": stat /nonexistent/worker: no such file or directory`},
			{"no-such-worker-anywhere", `broker: start pool "test": command "no-such-worker-anywhere": exec: "no-such-worker-anywhere": executable file not found in $PATH`},
			{"./worker", `broker: start pool "test": command "./worker"`},
			{notExec, "permission denied"},
			{"/bin/sh", `broker: start pool "test": command "/bin/sh": stat ` + filepath.Join(b.dir, "missing") + `: no such file or directory`},
		} {
			spec := b.spec("echo")
			spec.Cmd = []string{tc.cmd}
			spec.Dir = b.dir
			if tc.cmd == "/bin/sh" {
				spec.Dir = filepath.Join(b.dir, "missing")
			}
			pool, err := broker.NewPool(b.config(spec))
			require.NoError(t, err)
			err = pool.Start(context.Background())
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, broker.PoolNew, pool.Info().State)
			pool.Stop()
		}
	})

	t.Run("Twice", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("echo"), b)
		require.NoError(t, pool.Start(context.Background()), "a second Start while it runs does nothing")
		// Running; starting until its worker says ready.
		require.Contains(t, []broker.PoolState{broker.PoolStarting, broker.PoolRunning}, pool.Info().State)
		pool.Stop()
		require.ErrorIs(t, pool.Start(context.Background()), broker.ErrStopped)
	})

	t.Run("Listen", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("service")
		spec.Protocol = broker.ProtocolNone
		spec.Count = 2
		spec.Listen = "127.0.0.1:0"
		cfg := b.config(spec)
		cfg.Source = nil
		pool, err := broker.NewPool(cfg)
		require.NoError(t, err)
		require.Nil(t, pool.ListenAddr())
		require.NoError(t, pool.Start(context.Background()))
		t.Cleanup(pool.Stop)

		ws := readyWorkers(t, b, pool)
		pids := map[string]bool{strconv.Itoa(ws[0].PID): true, strconv.Itoa(ws[1].PID): true}
		conn, err := net.Dial("tcp", pool.ListenAddr().String())
		require.NoError(t, err)
		defer conn.Close()
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		pid, listenPID, _ := strings.Cut(strings.TrimSpace(line), " ")
		require.True(t, pids[pid], "answered by %s, not a worker of the pool", pid)
		require.Equal(t, pid, listenPID, "LISTEN_PID is not the worker's pid")
	})
}

// TestPool_Start_workerFailures covers workers that crash, hang or
// misbehave: the pool tolerates them, replaces them and loses no job.
func TestPool_Start_workerFailures(t *testing.T) {
	t.Parallel()

	t.Run("CrashWhileHoldingJob", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("crash-on-job"), b)
		first := readyWorkers(t, b, pool)[0]

		b.submit(t, "doomed", `1`)
		e := b.outcome(t)
		require.Equal(t, "doomed", e.job.ID)
		require.True(t, e.out.Crashed)
		require.Regexp(t, `^worker exited: exit status 3(; rss \d+ MiB at its last check)?; stderr: dying$`, e.out.Err)
		require.Equal(t, first.PID, e.out.PID)

		b.submit(t, "next", `2`)
		e = b.outcome(t)
		require.False(t, e.out.Crashed)
		require.Equal(t, "2", string(e.out.Result))
		require.NotEqual(t, first.PID, e.out.PID)
		w := pool.Workers()[0]
		require.Equal(t, 1, w.Restarts)
		require.Equal(t, e.out.PID, w.PID)
		requireGone(t, first.PID)
	})

	t.Run("NeverReady", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("never-ready")
		spec.ReadyTimeout = 100 * time.Millisecond
		pool := setup(t, spec, b)

		b.waitWorkers(t, pool, func(ws []broker.Worker) bool { return len(ws) > 0 && ws[0].Restarts >= 1 }, "no restart")
		require.NotEmpty(t, b.log.find("level=ERROR", "worker never said ready; killing it", "pool=test", "ready_timeout=100ms"))
		require.NotEmpty(t, b.log.find("worker exited unexpectedly", "exit=\"signal: killed\""))
		require.Zero(t, b.pending.Load(), "a worker that never said ready was asked for a job")
	})

	t.Run("Garbage", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("garbage"), b)

		b.submit(t, "a", `{"x":1}`)
		e := b.outcome(t)
		require.False(t, e.out.Crashed)
		require.JSONEq(t, `{"x":1}`, string(e.out.Result))
		pid := strconv.Itoa(pool.Workers()[0].PID)
		for _, want := range []string{"not json at all", `no \"op\" field`} {
			require.NotEmpty(t, b.log.find("level=WARN", "bad message from worker, ignored", "index=0", "pid="+pid, want), want)
		}
		// The line over the limit names no job, and the worker held none.
		require.NotEmpty(t, b.log.find("level=WARN", "protocol violation", "index=0", "pid="+pid, "proto: line too long", "holding=0"))
		require.NotEmpty(t, b.log.find("level=WARN", "unknown op from worker; ignored", "op=frobnicate", "pid="+pid))
		require.NotEmpty(t, b.log.find("level=WARN", "does not hold", "job=nobody"))
		require.Zero(t, pool.Workers()[0].Restarts)
	})

	t.Run("JobToDeadWorkerGoesToReplacement", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("deaf"), b)

		b.submit(t, "a", `"carried"`)
		e := b.outcome(t)
		require.Equal(t, "a", e.job.ID)
		require.False(t, e.out.Crashed)
		require.Equal(t, `"carried"`, string(e.out.Result))
		require.Equal(t, 1, pool.Workers()[0].Restarts)
		require.NotEmpty(t, b.log.find("cannot give the job to the worker", "job=a"))
		select {
		case e := <-b.done:
			t.Fatalf("job reported twice: %+v", e)
		default:
		}
	})

	t.Run("JobNoWorkerTakesFails", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("always-deaf"), b)

		b.submit(t, "a", `"never read"`)
		e := b.outcome(t)
		require.Equal(t, "a", e.job.ID)
		require.False(t, e.out.NotStarted, "a failed attempt, not a job put back")
		require.False(t, e.out.Crashed)
		// Three processes failed to take it, or fewer and the restarts
		// paused: either way the job's attempt failed.
		require.Contains(t, e.out.Err, "could not be handed to a worker in ")
		require.GreaterOrEqual(t, pool.Workers()[0].Restarts, 1)
	})

	t.Run("BusyWorkerGetsNoJob", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("busy"), b)

		// The Next of its first ready is cancelled by its busy: once that
		// Next has returned, no job can reach the busy worker.
		select {
		case <-b.intakeEnded:
		case <-time.After(waitLimit):
			t.Fatal("the busy worker's Next was not cancelled")
		}
		require.Zero(t, b.pending.Load())
		w := b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
			return len(ws) > 0 && ws[0].State == broker.WorkerBusy
		}, "worker not busy")[0]
		require.NoError(t, syscall.Kill(w.PID, syscall.SIGUSR1))
		b.submit(t, "a", `"after busy"`)
		e := b.outcome(t)
		require.Empty(t, e.out.Err)
		require.Equal(t, `"after busy"`, string(e.out.Result))
	})

	t.Run("ServiceKeptAlive", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("service")
		spec.Protocol = broker.ProtocolNone
		cfg := b.config(spec)
		cfg.Source = nil
		pool, err := broker.NewPool(cfg)
		require.NoError(t, err)
		require.NoError(t, pool.Start(context.Background()))
		t.Cleanup(pool.Stop)

		// up waits until the service process pid has said so on stdout.
		up := func(pid int) {
			b.log.wait(t, "pid="+strconv.Itoa(pid)+" ", "stream=stdout", `line="service up"`)
		}
		first := readyWorkers(t, b, pool)[0]
		up(first.PID)
		require.NoError(t, syscall.Kill(first.PID, syscall.SIGKILL))
		w := b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
			return len(ws) > 0 && ws[0].State == broker.WorkerReady && ws[0].PID != 0 && ws[0].PID != first.PID
		}, "no new worker")[0]
		require.Equal(t, 1, w.Restarts)
		up(w.PID)

		pool.Stop()
		requireGone(t, first.PID)
		requireGone(t, w.PID)
		require.NotEmpty(t, b.log.find("worker exited", "exit=\"exit status 0\""))
	})
}

func TestPool_Workers(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool := setup(t, b.spec("fifo-job"), b)
	w := readyWorkers(t, b, pool)[0]

	fifo := mkfifo(t, b.dir)
	b.submit(t, "held", strconv.Quote(fifo))
	f := openFIFO(t, fifo)
	busy := pool.Workers()[0]
	require.Equal(t, broker.WorkerBusy, busy.State)
	require.Equal(t, "held", busy.Job)
	require.Equal(t, w.PID, busy.PID)

	_, err := f.WriteString("done\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, `"done"`, string(b.outcome(t).out.Result))
	idle := pool.Workers()[0]
	require.Equal(t, broker.WorkerReady, idle.State)
	require.Empty(t, idle.Job)
	require.EqualValues(t, 1, idle.JobsDone)
}
