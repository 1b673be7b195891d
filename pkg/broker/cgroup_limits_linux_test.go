package broker_test

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/cgroup"
	"github.com/conductor-run/conductor/pkg/broker"
)

// TestPool_CgroupPidsLimitCountsOnlyThePoolsTasks: pids=2 is room for two
// single-process workers, though workerd's forking thread counts in a v1
// pids cgroup while it forks (the limit written holds one more).
func TestPool_CgroupPidsLimitCountsOnlyThePoolsTasks(t *testing.T) {
	requireCgroups(t)
	b := newBundle(t)
	spec := broker.Spec{
		Name: "pids2", Protocol: broker.ProtocolNone, Count: 2, Pids: 2,
		Cmd:          []string{"sleep", "1000"},
		RestartDelay: time.Hour,
	}
	pool, ev := setupEvents(t, spec, b)
	require.True(t, broker.Contained(pool))
	require.Eventually(t, func() bool {
		return len(ev.all(broker.EventWorkerStart)) == 2 || b.log.find("pids limit") != ""
	}, 10*time.Second, 10*time.Millisecond, "two workers start, or a start fails")
	require.Empty(t, b.log.find("pids limit"), "two one-process workers cannot start under pids=2")
	require.Len(t, ev.all(broker.EventWorkerStart), 2)
}

// TestPool_CgroupHugeCPUIsRefusedOrUnlimited: a cpu past any machine is
// refused at parse, or else enforced as what it says, never turned into
// the kernel's least quota by an overflow nor dropped with a warning.
func TestPool_CgroupHugeCPUIsRefusedOrUnlimited(t *testing.T) {
	for _, v := range []string{"1e9", "1e14", "1e300"} {
		t.Run(v, func(t *testing.T) {
			spec, err := broker.ParseSpec("name=a,cpu=" + v + ",cmd=w")
			if err != nil {
				return // refused at parse: fine
			}
			requireCgroups(t)
			b := newBundle(t)
			spec = broker.Spec{Name: "hugecpu", Protocol: broker.ProtocolNone, CPU: spec.CPU, Cmd: []string{"sleep", "1000"}}
			_, ev := setupEvents(t, spec, b)
			pid := ev.wait(t, broker.EventWorkerStart, nil).PID
			dir := workerCgroup(t, pid, cgroup.CPU)
			if dir == "" {
				t.Skip("no cpu controller for pools here")
			}
			quota := strings.TrimSpace(readFile(t, filepath.Join(filepath.Dir(dir), "cpu.cfs_quota_us")))
			require.NotEqual(t, "1000", quota, "cpu=%s accepted, and the pool got 0.01 CPU", v)
			require.Empty(t, b.log.find("pool limits not (all) set"), "cpu=%s accepted, then not enforced", v)
		})
	}
}

// TestPool_CgroupDescendantOOMIsNamed: a worker's child OOM-killed at the
// worker's max_rss (its leaf's limit) is named in the worker's exit.
func TestPool_CgroupDescendantOOMIsNamed(t *testing.T) {
	requireCgroups(t)
	b := newBundle(t)
	fifo := mkfifo(t, b.dir)
	spec := broker.Spec{
		Name: "childoom", Protocol: broker.ProtocolNone, MaxRSS: 64 << 20,
		// tail holds its whole input (no newline): the child OOM-killed.
		Cmd:          []string{"/bin/sh", "-c", `read x <"$1"; head -c 400000000 /dev/zero | tail -c 300000000 >/dev/null; echo "child: $?" >&2; exit 1`, "sh", fifo},
		RestartDelay: time.Hour,
	}
	_, ev := setupEvents(t, spec, b)
	worker := ev.wait(t, broker.EventWorkerStart, nil).PID
	openFIFO(t, fifo).Close()
	e := ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == worker })
	t.Logf("exit: %q oom=%v; stderr says %q", e.Exit, e.OOM, b.log.find("stderr", "child: "))
	require.Contains(t, b.log.find("stderr", "child: "), "137", "the child was not OOM-killed: the test proves nothing")
	require.True(t, strings.Contains(e.Exit, "out of memory") || b.log.find("out of memory") != "",
		"a descendant's OOM kill in the worker's leaf is named nowhere: exit %q", e.Exit)
}

// TestPool_CgroupThrottledPoolDoesNotStallOtherPools: the forking thread,
// shared by every pool, does not enter a pool's cpu cgroup (a fork waits
// for its child's exec, which would wait on an exhausted quota): a pool at
// cpu=0.01 whose workers are busy and churn does not hold back another
// pool's restarts. (With the thread in the cpu cgroup, they took 1.6-1.9 s.)
func TestPool_CgroupThrottledPoolDoesNotStallOtherPools(t *testing.T) {
	requireCgroups(t)
	b := newBundle(t)
	throttled := broker.Spec{
		Name: "throttled", Protocol: broker.ProtocolNone, CPU: 0.01, Count: 3,
		// Busy, and exits now and then, so the pool keeps forking.
		Cmd:          []string{"/bin/sh", "-c", `i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; exit 1`},
		RestartDelay: time.Millisecond, RestartMaxDelay: time.Millisecond, MaxFailedStarts: -1,
	}
	_, tev := setupEvents(t, throttled, b)
	tev.wait(t, broker.EventWorkerExit, nil) // the throttled pool churns

	b2 := newBundle(t)
	other := broker.Spec{Name: "other", Protocol: broker.ProtocolNone, Cmd: []string{"sleep", "1000"},
		RestartDelay: time.Millisecond, RestartMaxDelay: time.Millisecond, MaxFailedStarts: -1}
	_, ev := setupEvents(t, other, b2)
	ev.wait(t, broker.EventWorkerStart, nil)
	var worst time.Duration
	for i := range 5 {
		starts := ev.all(broker.EventWorkerStart)
		require.Len(t, starts, i+1)
		require.NoError(t, syscall.Kill(starts[i].PID, syscall.SIGKILL))
		next := ev.wait(t, broker.EventWorkerStart, func(e broker.Event) bool { return e.PID != starts[i].PID && e.Time.After(starts[i].Time) })
		exit := ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == starts[i].PID })
		worst = max(worst, next.Time.Sub(exit.Time))
	}
	t.Logf("pool other: worst exit-to-restart %v while pool throttled (cpu=0.01) forks", worst)
	require.Less(t, worst, time.Second, "another pool's throttled quota stalls this pool's restarts")
}

// TestPool_CgroupMaxRSSTooSmallToForkIsNamed: a max_rss too small for the
// fork itself (the kernel charges the new task's kernel stack to the leaf)
// fails the start with an error that names max_rss.
func TestPool_CgroupMaxRSSTooSmallToForkIsNamed(t *testing.T) {
	requireCgroups(t)
	b := newBundle(t)
	spec := broker.Spec{Name: "tinyrss", Protocol: broker.ProtocolNone, MaxRSS: 8 << 10,
		Cmd: []string{"sleep", "1000"}, RestartDelay: time.Hour}
	_, ev := setupEvents(t, spec, b)
	e := ev.wait(t, broker.EventWorkerExit, nil)
	t.Logf("exit: %q", e.Exit)
	require.Contains(t, e.Exit, "max_rss", "a start refused for the memory limit does not say so")
}
