package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/conductor-run/conductor/internal/cgroup"
	"github.com/conductor-run/conductor/pkg/broker"
)

// requireCgroups skips the test, with the reason, where this process
// cannot contain pools in cgroups (not root, no writable hierarchy).
func requireCgroups(t *testing.T) {
	t.Helper()
	c, err := broker.SetCgroups(broker.CgroupsAuto, nil)
	require.NoError(t, err)
	if !c.Cgroups {
		t.Skipf("pools cannot be contained in cgroups here: %s", c.Detail)
	}
}

// setsidScript is a service whose first run leaves a grandchild in a
// session of its own (a subshell starts it with setsid and exits, so it is
// orphaned too) and writes the grandchild's pid to the file $1; then it
// waits until the FIFO $2 is closed by its writer and exits 3 (a crash).
const setsidScript = `[ -e "$1" ] || (setsid sleep 1000 & echo $! >"$1.tmp" && mv "$1.tmp" "$1"); read x <"$2"; exit 3`

// TestPool_CgroupKillsSetsidGrandchild: a worker's grandchild that left
// its session and process group dies with the worker, when the worker
// crashes and when its pool stops, where the pool has a cgroup; without
// one (the fallback: process groups only), it survives both, as
// docs/supervision.md says.
func TestPool_CgroupKillsSetsidGrandchild(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		contained bool
		crash     bool
	}{
		{"Stop", true, false},
		{"Crash", true, true},
		{"StopWithoutCgroups", false, false},
		{"CrashWithoutCgroups", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.contained {
				requireCgroups(t)
			}
			b := newBundle(t)
			pidFile, fifo := filepath.Join(b.dir, "grandchild"), mkfifo(t, b.dir)
			spec := broker.Spec{
				Name: "setsid", Protocol: broker.ProtocolNone,
				Cmd:         []string{"/bin/sh", "-c", setsidScript, "sh", pidFile, fifo},
				StopTimeout: 2 * time.Second, KillTimeout: time.Second,
			}
			var opts []func(*broker.Config)
			if !tc.contained {
				opts = append(opts, broker.NoCgroups)
			}
			pool, ev := setupEvents(t, spec, b, opts...)
			require.Equal(t, tc.contained, broker.Contained(pool))
			worker := ev.wait(t, broker.EventWorkerStart, nil).PID
			gc := waitPidFile(t, pidFile)
			require.Eventually(t, func() bool { // once setsid(1) has run
				sid, err := unix.Getsid(gc)
				return err == nil && sid == gc
			}, waitLimit, time.Millisecond, "the grandchild leads no session of its own")
			if tc.contained {
				requireInWorkerCgroup(t, gc)
			} else {
				t.Cleanup(func() { _ = syscall.Kill(gc, syscall.SIGKILL) })
			}

			if tc.crash {
				openFIFO(t, fifo).Close() // the worker reads EOF and exits 3
				e := ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == worker })
				require.Equal(t, broker.ReasonFailure, e.Reason)
				require.Equal(t, 3, e.Code)
			} else {
				pool.Stop()
			}
			if tc.contained {
				requireDead(t, gc)
			} else {
				require.True(t, alive(gc), "without a cgroup the grandchild %d survives (documented)", gc)
			}
		})
	}
}

// TestPool_CgroupMovedAfterStart: where clone3 is refused, a process is
// moved into its cgroup2 leaf right after it starts; what it forks from
// then on is contained as well.
func TestPool_CgroupMovedAfterStart(t *testing.T) {
	t.Parallel()
	requireCgroups(t)
	b := newBundle(t)
	pidFile, fifo := filepath.Join(b.dir, "grandchild"), mkfifo(t, b.dir)
	spec := broker.Spec{
		Name: "moved", Protocol: broker.ProtocolNone,
		Cmd:         []string{"/bin/sh", "-c", `read x <"$2"; (setsid sleep 1000 & echo $! >"$1.tmp" && mv "$1.tmp" "$1"); exec sleep 1000`, "sh", pidFile, fifo},
		StopTimeout: 2 * time.Second, KillTimeout: time.Second,
	}
	pool, ev := setupEvents(t, spec, b, broker.NoCloneInto)
	worker := ev.wait(t, broker.EventWorkerStart, nil).PID
	requireInWorkerCgroup(t, worker)
	openFIFO(t, fifo).Close()
	gc := waitPidFile(t, pidFile)
	requireInWorkerCgroup(t, gc)
	pool.Stop()
	requireDead(t, gc)
}

// TestPool_CgroupMaxRSS: with a cgroup, max_rss is the hard limit of each
// worker's memory: the kernel's OOM killer kills a worker that reaches it,
// and its exit says so precisely, from its cgroup's own count. A worker
// killed with kill -9 is not called an OOM kill, whatever the host's
// count did meanwhile.
func TestPool_CgroupMaxRSS(t *testing.T) {
	t.Parallel()
	requireCgroups(t)
	b := newBundle(t)
	spec := b.spec("hog")
	spec.MaxRSS = 128 << 20
	peaks := make(chan [2]int64, 10) // pid, memory peak
	pool, ev := setupEvents(t, spec, b, withCheckInterval(20*time.Millisecond), func(cfg *broker.Config) {
		broker.OnProcEnded(cfg, func(pid int, peak int64) { peaks <- [2]int64{int64(pid), peak} })
	})
	hog := readyN(t, b, pool, 1)[0]

	b.submit(t, "hog", `"hog"`)
	e := b.outcome(t)
	require.Equal(t, hog.PID, e.out.PID)
	require.True(t, e.out.Crashed)
	require.True(t, e.out.OOMKilled, e.out.Err)
	require.Regexp(t, `^worker exited: signal: killed \(out of memory: max_rss reached; the kernel's OOM killer\)(; rss \d+ MiB at its last check)?(; stderr: .*)?$`, e.out.Err)
	exit := ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == hog.PID })
	require.True(t, exit.OOM)
	require.Equal(t, broker.ReasonFailure, exit.Reason, "killed by the limit, not recycled")
	require.Equal(t, "signal: killed (out of memory: max_rss reached; the kernel's OOM killer)", exit.Exit)
	require.Empty(t, b.log.find("recycling worker"), "with a cgroup, max_rss is no recycle trigger")
	peak := <-peaks
	require.Equal(t, int64(hog.PID), peak[0])
	require.Positive(t, peak[1])
	// The kernel may force a few pages past the limit (charges that cannot
	// fail, for a process it is killing): 1 MiB of slack.
	require.LessOrEqual(t, peak[1], spec.MaxRSS+1<<20, "the worker's memory peak")

	next := readyN(t, b, pool, 1)[0]
	b.submit(t, "held", `"hold"`)
	b.waitJob(t, pool, "held")
	require.NoError(t, syscall.Kill(next.PID, syscall.SIGKILL))
	e = b.outcome(t)
	require.True(t, e.out.Crashed)
	require.False(t, e.out.OOMKilled, e.out.Err)
	exit = ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == next.PID })
	require.False(t, exit.OOM)
	require.Equal(t, "signal: killed", exit.Exit)
}

// pidsScript forks sleeps until a fork fails, writing how many it
// started to the file $1 after each; dash then exits ("Cannot fork").
const pidsScript = `i=0; while :; do sleep 1000 & i=$((i+1)); echo $i >"$1"; done`

// TestPool_CgroupPids: the pool's pids limit caps its tasks: the worker's
// forks fail past it, and what it started dies with it.
func TestPool_CgroupPids(t *testing.T) {
	t.Parallel()
	requireCgroups(t)
	b := newBundle(t)
	count := filepath.Join(b.dir, "count")
	const pids = 8
	spec := broker.Spec{
		Name: "pids", Protocol: broker.ProtocolNone, Pids: pids,
		Cmd:          []string{"/bin/sh", "-c", pidsScript, "sh", count},
		RestartDelay: time.Hour, // one restart at once, then none: the test needs one run
	}
	_, ev := setupEvents(t, spec, b)
	first := ev.wait(t, broker.EventWorkerStart, nil).PID
	e := ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == first })
	require.Equal(t, broker.ReasonFailure, e.Reason)
	b.log.wait(t, "fork") // dash: "Cannot fork"
	n := waitPidFile(t, count)
	// A v1 pids cgroup holds one task more: workerd's forking thread
	// counts in it while it forks a worker.
	require.LessOrEqual(t, n, pids, "the shell and %d sleeps make more than pids=%d tasks (and one more for v1)", n, pids)
	require.Positive(t, n)
}

// TestPool_CgroupCPU: the pool's cpu limit is its cgroup's CPU quota.
func TestPool_CgroupCPU(t *testing.T) {
	t.Parallel()
	requireCgroups(t)
	b := newBundle(t)
	spec := broker.Spec{Name: "cpu", Protocol: broker.ProtocolNone, CPU: 1.5, Cmd: []string{"sleep", "1000"}}
	_, ev := setupEvents(t, spec, b)
	pid := ev.wait(t, broker.EventWorkerStart, nil).PID
	dir := workerCgroup(t, pid, cgroup.CPU)
	if dir == "" {
		t.Skip("no cpu controller for pools here")
	}
	pool := filepath.Dir(dir)
	if b, err := os.ReadFile(filepath.Join(pool, "cpu.max")); err == nil {
		require.Equal(t, "150000 100000", strings.TrimSpace(string(b)))
		return
	}
	require.Equal(t, "150000", strings.TrimSpace(readFile(t, filepath.Join(pool, "cpu.cfs_quota_us"))))
	require.Equal(t, "100000", strings.TrimSpace(readFile(t, filepath.Join(pool, "cpu.cfs_period_us"))))
}

// requireInWorkerCgroup fails unless process pid is in a worker's leaf of
// this process's subtree, in every hierarchy the pools use.
func requireInWorkerCgroup(t *testing.T, pid int) {
	t.Helper()
	subtree := fmt.Sprintf("/conductor-%d-", os.Getpid())
	for line := range strings.Lines(readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid))) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) == 3 && (f[1] == "" || f[1] == "memory" || f[1] == "pids") {
			require.Contains(t, f[2], subtree, "process %d: %s", pid, line)
		}
	}
}

// workerCgroup returns the directory of process pid's cgroup in the
// hierarchy of controller ctl, "" if it has none in this process's subtree.
func workerCgroup(t *testing.T, pid int, ctl string) string {
	t.Helper()
	l, err := cgroup.ParseLayout([]byte(readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid))), []byte(readFile(t, "/proc/self/mountinfo")))
	require.NoError(t, err)
	dir := l.V1[ctl]
	if dir == "" && hasWord(readFile(t, filepath.Join(l.Unified, "..", "cgroup.controllers")), ctl) {
		dir = l.Unified
	}
	if !strings.Contains(dir, fmt.Sprintf("/conductor-%d-", os.Getpid())) {
		return ""
	}
	return dir
}

// waitPidFile waits for the file at path to hold a number, and returns it.
func waitPidFile(t *testing.T, path string) int {
	t.Helper()
	var n int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		n, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && n > 0
	}, waitLimit, 5*time.Millisecond, "nothing written to %s", path)
	return n
}

// alive reports whether process pid runs: it exists and is no zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && !strings.HasPrefix(string(b[i+1:]), " Z")
}

// requireDead fails unless process pid is dead: gone, or a zombie that its
// new parent (init) has yet to reap.
func requireDead(t *testing.T, pid int) {
	t.Helper()
	require.False(t, alive(pid), "process %d survived", pid)
}
