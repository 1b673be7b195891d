package broker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// TestPool_CrashLoopReason runs a real command that fails at once with
// exit 127, as a missing program run through a shell does: by default the
// crash-loop breaker trips, the pool shows failed with a reason naming the
// exit, the stderr line and the retry time, and its workers show backoff
// with theirs; once the command works, the pool recovers by itself.
func TestPool_CrashLoopReason(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	flag := filepath.Join(b.dir, "works")
	spec := broker.Spec{
		Name:     "flaky",
		Count:    2,
		Protocol: broker.ProtocolNone,
		Cmd: []string{"/bin/sh", "-c",
			`if [ -e "$0" ]; then exec sleep 1000; fi; echo "no such file" >&2; exit 127`, flag},
		RestartDelay:      time.Millisecond,
		RestartMaxDelay:   20 * time.Millisecond,
		FailedStartWindow: 2 * time.Second, // MaxFailedStarts: the default, 5
		KillTimeout:       2 * time.Second,
	}
	pool, ev := setupEvents(t, spec, b)

	failed := ev.wait(t, broker.EventPoolFailed, nil)
	require.Contains(t, failed.Error, "crash loop: 5 failed starts within 2s")
	require.Contains(t, failed.Error, `last exit 127 "no such file"`)
	require.Contains(t, failed.Error, "retry at "+failed.RetryAt.UTC().Format("2006-01-02T15:04:05"))

	var info broker.PoolInfo
	b.workers.waitFor(t, func() bool {
		info = pool.Info()
		if info.State != broker.PoolFailed {
			return false
		}
		for _, w := range pool.Workers() {
			if w.State != broker.WorkerBackoff || !strings.Contains(w.Reason, "restarts paused") {
				return false
			}
		}
		return true
	}, "pool not failed with every worker paused")
	require.Contains(t, info.Reason, `exit 127 "no such file"`)
	require.Contains(t, info.Reason, "retry at ")
	require.False(t, info.RetryAt.IsZero())
	for _, w := range pool.Workers() {
		require.Zero(t, w.PID)
		require.Contains(t, w.Reason, `exit 127 "no such file"`)
		require.Contains(t, w.Reason, "; retry at ")
	}

	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	ev.wait(t, broker.EventPoolRecovered, nil)
	b.workers.waitFor(t, func() bool {
		info = pool.Info()
		if info.State != broker.PoolRunning || info.Reason != "" {
			return false
		}
		ws := pool.Workers()
		return len(ws) == 2 && ws[0].State == broker.WorkerReady && ws[1].State == broker.WorkerReady
	}, "pool did not recover")
	for _, w := range pool.Workers() {
		require.NotZero(t, w.PID)
		require.Empty(t, w.Reason)
	}
}

// TestPool_HonestState checks that a running pool none of whose workers
// is up does not say running: with the breaker off, a command that exits
// at once leaves its slots in backoff, and so the pool.
func TestPool_HonestState(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := broker.Spec{
		Name:            "broken",
		Count:           2,
		Protocol:        broker.ProtocolNone,
		Cmd:             []string{"/bin/sh", "-c", `echo "boom" >&2; exit 3`},
		MaxFailedStarts: -1,
		RestartDelay:    time.Second,
		RestartMaxDelay: time.Second,
	}
	pool := setup(t, spec, b)
	var info broker.PoolInfo
	b.workers.waitFor(t, func() bool {
		info = pool.Info()
		ws := pool.Workers()
		return info.State == broker.PoolBackoff && len(ws) == 2 &&
			ws[0].State == broker.WorkerBackoff && ws[1].State == broker.WorkerBackoff
	}, "pool not in backoff")
	require.Contains(t, info.Reason, "0 of 2 workers up; worker 0 backoff: exit 3 \"boom\"")
	require.Contains(t, info.Reason, "restart at ")
	require.Empty(t, info.Error)
}
