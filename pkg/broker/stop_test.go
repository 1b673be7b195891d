package broker_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

func TestPool_Stop(t *testing.T) {
	t.Parallel()

	t.Run("InFlightJobFinishes", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("fifo-job")
		spec.Count = 2
		spec.StopTimeout = time.Minute
		pool := setup(t, spec, b)
		ws := readyWorkers(t, b, pool)

		fifo := mkfifo(t, b.dir)
		b.submit(t, "in-flight", strconv.Quote(fifo))
		f := openFIFO(t, fifo)

		stopped := make(chan struct{})
		go func() {
			pool.Stop()
			close(stopped)
		}()
		select {
		case <-b.intakeEnded: // the idle worker's Next was cancelled
		case <-time.After(waitLimit):
			t.Fatal("Stop did not end intake")
		}
		require.Equal(t, broker.PoolStopping, pool.Info().State)
		_, err := f.WriteString("finished\n")
		require.NoError(t, err)
		require.NoError(t, f.Close())

		e := b.outcome(t)
		require.False(t, e.out.Crashed)
		require.Equal(t, `"finished"`, string(e.out.Result))
		select {
		case <-stopped:
		case <-time.After(waitLimit):
			t.Fatal("Stop did not return")
		}
		for _, w := range ws {
			requireGone(t, w.PID)
		}
		require.NotEmpty(t, b.log.find("worker exited", "exit=\"exit status 0\""))
	})

	t.Run("ShutdownEndsHeldJob", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("sleep-job")
		spec.StopTimeout = 50 * time.Millisecond
		pool := setup(t, spec, b)
		w := readyWorkers(t, b, pool)[0]

		b.submit(t, "sleepy", `1`)
		b.waitJob(t, pool, "sleepy")
		pool.Stop()
		e := b.outcome(t)
		require.False(t, e.out.Crashed, e.out.Err)
		require.Equal(t, `"slept"`, string(e.out.Result))
		requireGone(t, w.PID)
	})

	t.Run("EscalatesToSIGKILL", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		spec := b.spec("ignore-sigterm")
		spec.StopTimeout = 200 * time.Millisecond
		spec.KillTimeout = 200 * time.Millisecond
		pool := setup(t, spec, b)
		w := readyWorkers(t, b, pool)[0]

		b.submit(t, "stuck", `1`)
		b.waitJob(t, pool, "stuck")
		start := time.Now()
		pool.Stop()
		elapsed := time.Since(start)
		require.GreaterOrEqual(t, elapsed, spec.StopTimeout+2*spec.KillTimeout)
		require.Less(t, elapsed, 5*time.Second)

		e := b.outcome(t)
		require.True(t, e.out.Crashed)
		require.False(t, e.out.OOMKilled)
		require.Regexp(t, `^pool stopped \(worker exited: signal: killed(; rss \d+ MiB at its last check)?\)$`, e.out.Err)
		requireGone(t, w.PID)
		require.NotEmpty(t, b.log.find("did not exit after shutdown; sending SIGTERM"))
	})

	t.Run("KillsTheProcessGroup", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("with-child"), b)
		w := readyWorkers(t, b, pool)[0]

		m := regexp.MustCompile(`line="child=(\d+)"`).FindStringSubmatch(b.log.wait(t, `line="child=`))
		require.NotNil(t, m)
		child, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		pool.Stop()
		requireGone(t, w.PID)
		// The child was the worker's: once killed, its new parent (init or
		// a subreaper) reaps it.
		require.Eventually(t, func() bool { return gone(child) }, waitLimit, 10*time.Millisecond)
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool := setup(t, b.spec("echo"), b)
		w := readyWorkers(t, b, pool)[0]

		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				if i%3 == 0 {
					pool.Kill()
				} else {
					pool.Stop()
				}
			})
		}
		wg.Wait()
		<-pool.Stopped()
		pool.Stop()
		pool.Kill()
		requireGone(t, w.PID)
	})

	t.Run("BeforeStart", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool, err := broker.NewPool(b.config(b.spec("echo")))
		require.NoError(t, err)
		stopped := pool.Stopped() // one channel for the pool's one life
		select {
		case <-stopped:
			t.Fatal("Stopped closed before Stop")
		default:
		}
		pool.Stop() // returns at once
		<-stopped
		<-pool.Stopped()
		pool.Kill()
		require.Equal(t, broker.PoolStopped, pool.Info().State)
		require.Empty(t, pool.Workers())
		require.ErrorIs(t, pool.Start(context.Background()), broker.ErrStopped)
	})

	t.Run("ContextCanceled", func(t *testing.T) {
		t.Parallel()
		b := newBundle(t)
		pool, err := broker.NewPool(b.config(b.spec("echo")))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, pool.Start(ctx))
		w := readyWorkers(t, b, pool)[0]
		cancel()
		select {
		case <-pool.Stopped():
		case <-time.After(waitLimit):
			t.Fatal("pool did not stop when its context ended")
		}
		requireGone(t, w.PID)
	})
}

func TestPool_Kill(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("ignore-sigterm")
	spec.StopTimeout = time.Minute
	spec.KillTimeout = time.Minute
	pool := setup(t, spec, b)
	w := readyWorkers(t, b, pool)[0]

	b.submit(t, "stuck", `1`)
	b.waitJob(t, pool, "stuck")
	start := time.Now()
	pool.Kill()
	require.Less(t, time.Since(start), 5*time.Second)
	e := b.outcome(t)
	require.True(t, e.out.Crashed)
	require.False(t, e.out.OOMKilled)
	require.Regexp(t, `^pool killed \(worker exited: signal: killed(; rss \d+ MiB at its last check)?\)$`, e.out.Err)
	requireGone(t, w.PID)
}

// gone reports whether pid has ended: no such process, or a zombie not yet
// reaped by its parent.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
