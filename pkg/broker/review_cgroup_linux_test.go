package broker_test

import (
	"path/filepath"
	"strings"
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
