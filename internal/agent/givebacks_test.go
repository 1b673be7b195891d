package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// A pool whose crash-loop breaker tripped holds no job ahead until it runs
// again (source.poolEvent): an operator who drains the failed pool, fixes
// the host and resumes it gets a pool that holds jobs ahead again, though
// the breaker never said it recovered.
func TestSource_FailedThenDrainedThenResumedHoldsAheadAgain(t *testing.T) {
	t.Parallel()
	a, bp, src, fix := failingPool(t)
	// The operator fixes the host, drains the failed pool and resumes it.
	fix()
	require.NoError(t, a.accept(wire.Command{Op: wire.CommandDrain, Pool: "sq"}))
	require.Eventually(t, func() bool { return bp.Info().State == broker.PoolDrained }, waitLimit, 5*time.Millisecond, "drained")
	require.NoError(t, a.accept(wire.Command{Op: wire.CommandResume, Pool: "sq"}))
	awaitWorkerUp(t, bp)
	require.Equal(t, broker.PoolRunning, bp.Info().State)
	require.Eventually(t, func() bool { return !failedPool(src) }, waitLimit, 5*time.Millisecond,
		"the pool runs again, but its source still holds nothing ahead as if it had failed")
}

// A failed pool (crash-loop breaker tripped) that the operator fixes and
// restarts holds jobs ahead again once a worker is up.
func TestSource_FailedPoolRestartedHoldsAheadAgain(t *testing.T) {
	t.Parallel()
	_, bp, src, fix := failingPool(t)
	fix()
	require.NoError(t, bp.Restart(context.Background(), time.Second))
	awaitWorkerUp(t, bp)
	require.Equal(t, broker.PoolRunning, bp.Info().State, "every worker is up")
	require.Eventually(t, func() bool { return !failedPool(src) }, waitLimit, 5*time.Millisecond,
		"the source still holds nothing ahead")
}

// failingPool starts an agent whose pool sq fails (its command exits 127
// until fix is called) and returns it once the breaker has tripped.
func failingPool(t *testing.T) (a *Agent, bp *broker.Pool, src *source, fix func()) {
	t.Helper()
	b, _ := bareBundle(t, 0)
	ok := filepath.Join(t.TempDir(), "ok")
	a, err := New(Config{Conn: b.nc, Host: "h9", Pools: []broker.Spec{{
		Name: "sq", Count: 1, KillTimeout: time.Second,
		RestartDelay: time.Millisecond, RestartMaxDelay: 10 * time.Millisecond,
		Cmd: []string{"/bin/sh", "-c", `test -f ` + ok + ` || { echo broken >&2; exit 127; }; echo '{"op":"ready"}' >&4; exec sleep 600`},
	}}})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
	require.Eventually(t, func() bool {
		p := a.findPool("sq")
		if p == nil {
			return false
		}
		bp, src = p.running()
		return bp != nil && src != nil && bp.Info().State == broker.PoolFailed
	}, waitLimit, 5*time.Millisecond, "the pool fails")
	require.True(t, failedPool(src))
	return a, bp, src, func() { require.NoError(t, os.WriteFile(ok, nil, 0o600)) }
}

// awaitWorkerUp waits until a worker of bp is ready.
func awaitWorkerUp(t *testing.T, bp *broker.Pool) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, w := range bp.Workers() {
			if w.State == broker.WorkerReady {
				return true
			}
		}
		return false
	}, waitLimit, 5*time.Millisecond, "a worker is up again")
}

// A resume that comes while a drain still waits for a worker's job runs
// once the drain has ended (a pool's commands run one at a time): until
// then the draining pool, whose workers take no job, holds none, so that
// other hosts run them.
func TestSource_ResumeDuringDrainHoldsJobsNoWorkerTakes(t *testing.T) {
	t.Parallel()
	b, _ := bareBundle(t, 0)
	const worker = `echo '{"op":"ready"}' >&4
while read -r line <&3; do
  case "$line" in *'"op":"job"'*) ;; *) exit 0 ;; esac
  case "$line" in *block*) exec sleep 600 ;; esac
  id=$(printf '%s\n' "$line" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  echo '{"op":"done","id":"'"$id"'","result":1}' >&4
done`
	a, err := New(Config{Conn: b.nc, Host: "h9", Pools: []broker.Spec{{
		Name: "sq", Count: 1, KillTimeout: time.Second, Cmd: []string{"/bin/sh", "-c", worker},
	}}})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
	var bp *broker.Pool
	var src *source
	require.Eventually(t, func() bool {
		if p := a.findPool("sq"); p != nil {
			bp, src = p.running()
		}
		return bp != nil && src != nil
	}, waitLimit, 5*time.Millisecond)

	// Short jobs: the source learns to hold jobs ahead.
	b.publish(t, 30)
	require.Eventually(t, func() bool { return b.pending(t) == 0 && src.pace.short() }, waitLimit, 5*time.Millisecond, "the short jobs run")
	_, err = b.js.Publish(context.Background(), b.space.Job("sq"), []byte(`"block"`))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for _, w := range bp.Workers() {
			if w.State == broker.WorkerBusy && w.Job != "" {
				return true
			}
		}
		return false
	}, waitLimit, 5*time.Millisecond, "the worker runs the long job (not merely holds it)")

	require.NoError(t, a.accept(wire.Command{Op: wire.CommandDrain, Pool: "sq", Timeout: wire.Duration(8 * time.Second)}))
	require.Eventually(t, func() bool { return bp.Info().State == broker.PoolDraining }, waitLimit, 5*time.Millisecond, "draining")
	require.NoError(t, a.accept(wire.Command{Op: wire.CommandResume, Pool: "sq"}))
	b.publish(t, 20)
	require.Never(t, func() bool {
		_, ready := src.out.counts()
		return ready > 0 && bp.Info().State == broker.PoolDraining
	}, 2*time.Second, 10*time.Millisecond, "a draining pool holds jobs that none of its workers will take")
}

// failedPool reports whether src holds no job ahead for its pool's failure.
func failedPool(src *source) bool {
	_, failed := src.out.holding()
	return failed
}
