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

// TestReviewCgroup_PidsLimitCountsOnlyThePoolsTasks: pids=2 for two
// single-process workers (sleep) is enough by the docs ("caps the pool's
// tasks ... all its workers together"). But the forking thread of workerd
// is moved into the new worker's v1 leaf (inside the pool's pids cgroup)
// for the fork, and counts as one of the pool's tasks: the second fork
// fails with EAGAIN, as pids=1 makes every start of a one-process worker
// fail.
func TestReviewCgroup_PidsLimitCountsOnlyThePoolsTasks(t *testing.T) {
	requireCgroups(t)
	b := newBundle(t)
	spec := broker.Spec{
		Name: "pids2", Protocol: broker.ProtocolNone, Count: 2, Pids: 2,
		Cmd:          []string{"sleep", "1000"},
		RestartDelay: time.Hour,
	}
	pool, ev := setupEvents(t, spec, b)
	require.True(t, broker.Contained(pool))
	deadline := time.Now().Add(10 * time.Second)
	for len(ev.all(broker.EventWorkerStart)) < 2 && time.Now().Before(deadline) {
		if line := b.log.find("pids limit"); line != "" {
			t.Fatalf("two one-process workers cannot start under pids=2: %s", line)
		}
		time.Sleep(10 * time.Millisecond) // polling the log, bounded by deadline
	}
	require.Len(t, ev.all(broker.EventWorkerStart), 2)
}

// TestReviewCgroup_HugeCPUIsRefusedOrUnlimited: cpu=1e14 (or 1e300) is
// accepted by ParseSpec, and the pool then gets the kernel's least quota,
// 1 ms per 100 ms (0.01 CPU): cpus*100000 overflows int64 in the
// conversion (MinInt64 on amd64) and max(.., 1000) picks 1000. cpu=1e9
// is accepted too and then refused by the kernel (EINVAL), which is only
// a warning: the pool runs with no cpu limit.
func TestReviewCgroup_HugeCPUIsRefusedOrUnlimited(t *testing.T) {
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

// TestReviewCgroup_DescendantOOMIsNamed: a worker's child OOM-killed at
// the worker's max_rss (its leaf's limit) is counted by the leaf
// (oom_kill rises), but nothing says so: the worker's exit reads "exit
// status 1" and no line of the log names an out-of-memory kill.
func TestReviewCgroup_DescendantOOMIsNamed(t *testing.T) {
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

// TestReviewCgroup_ThrottledPoolDoesNotStallOtherPools: docs/supervision.md
// says the forking thread, in the pool's cpu cgroup for the fork, may
// delay "the next start of any pool, by up to one period (100 ms)". With
// vfork (Go's clone3 CLONE_VFORK) the thread waits until the child has
// exec'd, and the child runs under the same exhausted quota, so a pool at
// cpu=0.01 whose workers are busy holds the one spawner, shared by every
// pool, for seconds: here pool "other" (no limit) restarts a killed
// worker after up to several seconds instead of milliseconds.
func TestReviewCgroup_ThrottledPoolDoesNotStallOtherPools(t *testing.T) {
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

// TestReviewCgroup_MaxRSSTooSmallToForkIsNamed: a max_rss too small for
// the fork itself (the kernel charges the new task's kernel stack to the
// leaf the forking thread entered) makes every start fail with a bare
// "fork/exec ...: cannot allocate memory" (and the kernel logs "Out of
// memory and no killable processes" each time); unlike the pids limit's
// EAGAIN, nothing names max_rss as the cause.
func TestReviewCgroup_MaxRSSTooSmallToForkIsNamed(t *testing.T) {
	requireCgroups(t)
	b := newBundle(t)
	spec := broker.Spec{Name: "tinyrss", Protocol: broker.ProtocolNone, MaxRSS: 8 << 10,
		Cmd: []string{"sleep", "1000"}, RestartDelay: time.Hour}
	_, ev := setupEvents(t, spec, b)
	e := ev.wait(t, broker.EventWorkerExit, nil)
	t.Logf("exit: %q", e.Exit)
	require.Contains(t, e.Exit, "max_rss", "a start refused for the memory limit does not say so")
}
