package broker_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// oomErr is the crash report of a job whose worker the OOM killer ended.
const oomErr = `^worker exited: signal: killed \(out of memory: the kernel's OOM killer\)(; rss \d+ MiB at its last check)?(; stderr: .*)?$`

// TestPool_OOMKill has the kernel's OOM killer kill a worker that holds a
// job, in a memory cgroup of 64 MiB of its own: the job's outcome and the
// exit event must say so. A worker alive across that OOM kill and then
// SIGKILLed by its own pool's stop, and one killed with kill -9 after it,
// must not.
//
// Not parallel: the pool reads the host's count of OOM kills, so this
// test's OOM kill would also be put on a worker of a parallel test that a
// SIGKILL from outside ends meanwhile (TestPool_Events's kill -9).
//
// Its pools have no cgroups of their own (the hog moves itself into the
// test's): this is the OOM naming of a host without them.
func TestPool_OOMKill(t *testing.T) {
	cg := newMemoryCgroup(t, 64<<20)

	// The bystander holds a job across the OOM kill; it ignores SIGTERM, so
	// its pool's stop ends with the SIGKILL of the kill ladder.
	bb := newBundle(t)
	bspec := bb.spec("ignore-sigterm")
	bspec.Name = "bystander"
	bspec.StopTimeout, bspec.KillTimeout = 100*time.Millisecond, 100*time.Millisecond
	bpool, bev := setupEvents(t, bspec, bb, broker.NoCgroups)
	readyN(t, bb, bpool, 1)
	bb.submit(t, "stuck", `1`)
	bb.waitJob(t, bpool, "stuck")

	b := newBundle(t)
	spec := b.spec("hog")
	// The worker moves itself into the cgroup, then becomes the fake worker.
	spec.Cmd = []string{"/bin/sh", "-c", `echo $$ >"$1" && exec "$0" -test.run='^$'`, os.Args[0], cg.procs()}
	pool, ev := setupEvents(t, spec, b, broker.NoCgroups)
	hog := readyN(t, b, pool, 1)[0]

	b.submit(t, "hog", `"hog"`)
	e := b.outcome(t)
	require.Equal(t, "hog", e.job.ID)
	require.Equal(t, hog.PID, e.out.PID)
	require.Equal(t, int64(1), cg.oomKills(t), "the kernel's OOM killer did not kill the worker: %s", e.out.Err)
	require.True(t, e.out.Crashed)
	require.True(t, e.out.OOMKilled, e.out.Err)
	require.Regexp(t, oomErr, e.out.Err)
	exit := ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == hog.PID })
	require.True(t, exit.OOM)
	require.Equal(t, broker.ReasonFailure, exit.Reason)
	require.Equal(t, "signal: killed (out of memory: the kernel's OOM killer)", exit.Exit)
	require.Equal(t, "SIGKILL", exit.Signal)
	require.Equal(t, -1, exit.Code)

	// Its replacement, started after the OOM kill, is killed with kill -9.
	next := readyN(t, b, pool, 1)[0]
	require.NotEqual(t, hog.PID, next.PID)
	b.submit(t, "held", `"hold"`)
	b.waitJob(t, pool, "held")
	require.NoError(t, syscall.Kill(next.PID, syscall.SIGKILL))
	e = b.outcome(t)
	require.True(t, e.out.Crashed)
	require.False(t, e.out.OOMKilled, e.out.Err)
	require.Regexp(t, `^worker exited: signal: killed(; rss \d+ MiB at its last check)?$`, e.out.Err)
	exit = ev.wait(t, broker.EventWorkerExit, func(e broker.Event) bool { return e.PID == next.PID })
	require.False(t, exit.OOM)
	require.Equal(t, "signal: killed", exit.Exit)

	// The bystander saw the count of OOM kills rise, but its SIGKILL is its
	// pool's own.
	bpool.Stop()
	e = bb.outcome(t)
	require.True(t, e.out.Crashed)
	require.False(t, e.out.OOMKilled, e.out.Err)
	require.Regexp(t, `^pool stopped \(worker exited: signal: killed(; rss \d+ MiB at its last check)?\)$`, e.out.Err)
	exit = bev.wait(t, broker.EventWorkerExit, nil)
	require.False(t, exit.OOM)
	require.Equal(t, "signal: killed", exit.Exit)
	require.Equal(t, "SIGKILL", exit.Signal)
}

// memoryCgroup is a memory cgroup made for a test, removed when it ends.
type memoryCgroup struct {
	dir string
	v2  bool
}

// newMemoryCgroup makes a memory cgroup limited to limit bytes, swap
// included: on cgroup v1 a child of this process's memory cgroup; on v2 a
// child of its cgroup, or, where that cgroup does not hand the memory
// controller to its children (it holds processes, so it cannot), a sibling.
// It skips the test, naming what is missing, where no cgroup can be made.
func newMemoryCgroup(t *testing.T, limit int64) *memoryCgroup {
	t.Helper()
	own, mount, v2 := ownMemoryCgroup(t)
	parent := own
	if v2 && !hasWord(readFile(t, filepath.Join(own, "cgroup.subtree_control")), "memory") {
		// own holds this process, so it cannot hand the memory controller
		// to children (cgroup v2's no-internal-process rule); a sibling gets
		// it if own's parent hands it out, as own's cgroup.controllers shows.
		switch {
		case own == mount:
			t.Skipf("cgroup v2: memory is not in %s/cgroup.subtree_control: the root cgroup hands no memory controller down", own)
		case !hasWord(readFile(t, filepath.Join(own, "cgroup.controllers")), "memory"):
			t.Skipf("cgroup v2: memory is in neither %s/cgroup.subtree_control nor its cgroup.controllers: the memory controller is not delegated here", own)
		}
		parent = filepath.Dir(own)
	}
	cg := &memoryCgroup{dir: filepath.Join(parent, fmt.Sprintf("conductor-oom-test-%d", os.Getpid())), v2: v2}
	err := os.Mkdir(cg.dir, 0o755)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		t.Skipf("cannot make a memory cgroup (it needs root and a writable cgroup file system): %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		// rmdir fails (EBUSY) while a process is left in the cgroup.
		var err error
		removed := func() bool { err = syscall.Rmdir(cg.dir); return err == nil }
		if !assert.Eventually(t, removed, waitLimit, 10*time.Millisecond) {
			t.Errorf("remove cgroup %s: %v", cg.dir, err)
		}
	})
	n := strconv.FormatInt(limit, 10)
	if v2 {
		cg.write(t, "memory.max", n, true)
		cg.write(t, "memory.swap.max", "0", false)
	} else {
		cg.write(t, "memory.limit_in_bytes", n, true)
		cg.write(t, "memory.memsw.limit_in_bytes", n, false) // present only with swap accounting
		cg.write(t, "memory.swappiness", "0", false)
	}
	return cg
}

// procs is the file a process writes its pid to to join the cgroup.
func (cg *memoryCgroup) procs() string { return filepath.Join(cg.dir, "cgroup.procs") }

// oomKills returns how many processes the OOM killer killed in the cgroup.
func (cg *memoryCgroup) oomKills(t *testing.T) int64 {
	name := "memory.oom_control"
	if cg.v2 {
		name = "memory.events"
	}
	n := broker.Counter([]byte(readFile(t, filepath.Join(cg.dir, name))), "oom_kill")
	if n < 0 {
		t.Fatalf("no oom_kill line in %s/%s", cg.dir, name)
	}
	return n
}

// write writes value to the cgroup's file name; a file that is not there
// fails the test only if it is required.
func (cg *memoryCgroup) write(t *testing.T, name, value string, required bool) {
	t.Helper()
	err := os.WriteFile(filepath.Join(cg.dir, name), []byte(value), 0)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return
	}
	require.NoError(t, err, "write %s to %s/%s", value, cg.dir, name)
}

// ownMemoryCgroup returns the directory of this process's memory cgroup,
// the mount point of its cgroup file system, and whether that is cgroup v2,
// from /proc/self/cgroup and /proc/self/mountinfo. It skips the test if
// there is no memory cgroup.
func ownMemoryCgroup(t *testing.T) (dir, mount string, v2 bool) {
	t.Helper()
	var v1Path, v2Path string
	for line := range strings.Lines(readFile(t, "/proc/self/cgroup")) {
		// hierarchy-ID:controller-list:path
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		switch {
		case len(f) != 3:
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			v1Path = f[2]
		case f[0] == "0" && f[1] == "":
			v2Path = f[2]
		}
	}
	var v1Mount, v2Mount [2]string // {root, mount point}
	for line := range strings.Lines(readFile(t, "/proc/self/mountinfo")) {
		// id parent dev root mountpoint options [tags] - fstype source superoptions
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup" && slices.Contains(strings.Split(g[2], ","), "memory"):
			v1Mount = [2]string{f[3], f[4]}
		case g[0] == "cgroup2" && v2Mount[1] == "":
			v2Mount = [2]string{f[3], f[4]}
		}
	}
	switch {
	case v1Path != "" && v1Mount[1] != "":
		return underMount(t, v1Mount, v1Path), v1Mount[1], false
	case v2Path != "" && v2Mount[1] != "":
		return underMount(t, v2Mount, v2Path), v2Mount[1], true
	}
	t.Skip("no memory cgroup: /proc/self/cgroup and /proc/self/mountinfo show neither a cgroup v1 memory hierarchy nor a cgroup2 mount")
	return "", "", false
}

// underMount returns the directory of cgroup path in the cgroup file
// system mounted at m[1], whose root is the cgroup m[0].
func underMount(t *testing.T, m [2]string, path string) string {
	t.Helper()
	rel, ok := strings.CutPrefix(path, strings.TrimSuffix(m[0], "/"))
	if !ok {
		t.Skipf("this process's cgroup %s is not under the cgroup mounted at %s (its root is %s)", path, m[1], m[0])
	}
	return filepath.Join(m[1], rel)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func hasWord(s, word string) bool { return slices.Contains(strings.Fields(s), word) }
