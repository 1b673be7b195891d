package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// realLayout returns this process's layout, or skips the test, saying
// why, where it cannot make cgroups.
func realLayout(t *testing.T) Layout {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making cgroups needs root (or a delegated cgroup, which this test does not look for)")
	}
	l, err := ReadLayout()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	return l
}

// layouts are the layouts a test runs under: the host's, and, on a hybrid
// host, its v1 hierarchies alone (what a v1-only host has).
func layouts(t *testing.T) map[string]Layout {
	l := realLayout(t)
	out := map[string]Layout{"host": l}
	if l.Unified != "" && len(l.V1) > 0 {
		v1 := l
		v1.Unified, v1.UnifiedRoot = "", false
		out["v1"] = v1
	}
	return out
}

// openHost opens a Host with a prefix of the test's own, closed at its end.
func openHost(t *testing.T, l Layout, prefix string) *Host {
	t.Helper()
	h, _, err := Open(l, prefix)
	if err != nil && (os.IsPermission(err) || strings.Contains(err.Error(), "read-only")) {
		t.Skipf("cannot make cgroups: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, h.Close())
		for _, x := range h.hiers {
			require.NoDirExists(t, x.dir)
		}
	})
	return h
}

// startIn starts `sh -c script` born in leaf lf, as the broker's spawner
// does, and returns it with the lines it writes to stdout.
func startIn(t *testing.T, lf *Leaf, script string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	fd, err := lf.OpenFD()
	require.NoError(t, err)
	if fd != nil {
		defer fd.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	}
	errc := make(chan error, 1)
	go func() { // on a thread of its own, moved into the leaf's v1 cgroups
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := syscall.Gettid()
		if err := lf.EnterThread(tid); err != nil {
			errc <- err
			return
		}
		err := cmd.Start()
		if lerr := lf.LeaveThread(tid); err == nil {
			err = lerr
		}
		if err == nil {
			err = lf.Adopt(cmd.Process.Pid, fd != nil)
		}
		errc <- err
	}()
	require.NoError(t, <-errc)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

// TestLeaf_Kill: a leaf's Kill ends every process in it, a grandchild that
// made a session of its own included, and the leaf can then be removed.
func TestLeaf_Kill(t *testing.T) {
	t.Parallel()
	for name, l := range layouts(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := openHost(t, l, "cgtest-kill-"+name)
			g, err := h.NewGroup("pool-1")
			require.NoError(t, err)
			lf, err := g.NewLeaf("0-1", 64<<20)
			require.NoError(t, err)
			require.Equal(t, h.Has(Memory), lf.MemoryLimited())

			cmd, out := startIn(t, lf, `(setsid sleep 1000 & echo $!); echo ready; exec sleep 1000`)
			require.True(t, out.Scan())
			gc, err := strconv.Atoi(out.Text())
			require.NoError(t, err)
			require.True(t, out.Scan()) // ready: the subshell has exited
			require.ElementsMatch(t, []int{cmd.Process.Pid, gc}, lf.Procs(), "both in the leaf")
			for i, x := range lf.hiers {
				require.Contains(t, procs(x.dir), gc, "hierarchy %d (%s)", i, x.dir)
			}
			if lf.HasMemory() {
				require.Equal(t, int64(0), lf.OOMKills())
			}

			require.NoError(t, lf.Kill(10*time.Second))
			require.Empty(t, lf.Procs())
			require.False(t, running(gc), "the grandchild survived")
			_ = cmd.Wait()
			require.NoError(t, lf.Remove())
			require.NoError(t, g.Remove())
		})
	}
}

// TestGroup_Remove kills what is left in a group and removes it.
func TestGroup_Remove(t *testing.T) {
	t.Parallel()
	for name, l := range layouts(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := openHost(t, l, "cgtest-remove-"+name)
			g, err := h.NewGroup("pool-1")
			require.NoError(t, err)
			lf, err := g.NewLeaf("0-1", 0)
			require.NoError(t, err)
			cmd, _ := startIn(t, lf, `exec sleep 1000`)
			require.NoError(t, g.Remove())
			require.Error(t, cmd.Wait(), "killed")
			for _, x := range g.hiers {
				require.NoDirExists(t, x.dir)
			}
		})
	}
}

func TestGroup_SetLimits(t *testing.T) {
	t.Parallel()
	for name, l := range layouts(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := openHost(t, l, "cgtest-limits-"+name)
			if !h.Has(CPU) || !h.Has(Pids) {
				t.Skipf("no cpu or pids controller: %s", h.Notes())
			}
			g, err := h.NewGroup("pool-1")
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, g.Remove()) })
			cpu, _ := g.hier(CPU)
			pids, _ := g.hier(Pids)
			read := func(x hier, name string) string {
				b, err := os.ReadFile(filepath.Join(x.dir, name))
				require.NoError(t, err)
				return strings.TrimSpace(string(b))
			}
			require.NoError(t, g.SetLimits(Limits{CPU: 1.5, Pids: 10}))
			if pids.v2 {
				require.Equal(t, "10", read(pids, "pids.max"))
			} else {
				require.Equal(t, "11", read(pids, "pids.max"), "one more for the forking thread, which enters v1 leaves")
			}
			if cpu.v2 {
				require.Equal(t, "150000 100000", read(cpu, "cpu.max"))
			} else {
				require.Equal(t, "150000", read(cpu, "cpu.cfs_quota_us"))
			}
			require.NoError(t, g.SetLimits(Limits{}))
			require.Equal(t, "max", read(pids, "pids.max"))
			if cpu.v2 {
				require.Equal(t, "max 100000", read(cpu, "cpu.max"))
			} else {
				require.Equal(t, "-1", read(cpu, "cpu.cfs_quota_us"))
			}
		})
	}
}

// TestOpen_Sweep: Open removes the subtree of a supervisor that no longer

// Subtrees are swept however young: the tests make them just before.
func init() { sweepAge = 0 }

// runs, killing what it left there, and leaves a live one's alone.
func TestOpen_Sweep(t *testing.T) {
	t.Parallel()
	l := realLayout(t)
	const prefix = "cgtest-sweep"
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	deadPID := dead.Process.Pid

	// A stale subtree, in the first hierarchy Open will use, with a
	// process left in a leaf.
	parent, v2 := l.Unified, true
	if parent == "" {
		parent, v2 = l.V1[Memory], false
	}
	stale := hier{v2: v2, dir: filepath.Join(parent, fmt.Sprintf("%s-%d-0badf00d", prefix, deadPID))}
	leaf := &Leaf{h: &Host{home: []string{parent}}, hiers: []hier{stale.join("pool-1").join("0-1")}}
	require.NoError(t, os.MkdirAll(leaf.hiers[0].dir, 0o755))
	orphan, _ := startIn(t, leaf, "exec sleep 1000")
	// A live one: its supervisor (here, this test) holds it locked.
	live := hier{v2: v2, dir: filepath.Join(parent, fmt.Sprintf("%s-%d-0000cafe", prefix, deadPID))}
	require.NoError(t, os.Mkdir(live.dir, 0o755))
	t.Cleanup(func() { _ = syscall.Rmdir(live.dir) })
	lock, err := lockDir(live.dir)
	require.NoError(t, err)
	t.Cleanup(func() { lock.Close() })

	h, swept, err := Open(l, prefix)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close()) })
	require.Len(t, swept, 1)
	require.Equal(t, stale.dir, swept[0].Dir)
	require.NoError(t, swept[0].Err)
	require.Len(t, swept[0].Killed, 1)
	require.True(t, strings.HasPrefix(swept[0].Killed[0], fmt.Sprintf("%d (", orphan.Process.Pid)), "%v", swept[0].Killed)
	require.Error(t, orphan.Wait(), "the orphan was killed")
	require.NoDirExists(t, stale.dir)
	require.DirExists(t, live.dir)
}

// TestHost_HandDown: on cgroup v2, a cgroup that is not the root must hold
// no process to hand its controllers down: Open moves this process into a
// leaf of its own first. A file tree stands for the cgroup here (this
// machine's cgroup2 hierarchy has no controllers to hand down).
func TestHost_HandDown(t *testing.T) {
	t.Parallel()
	own := t.TempDir()
	for name, v := range map[string]string{"cgroup.controllers": "cpuset cpu io memory pids\n", "cgroup.subtree_control": "", "cgroup.procs": ""} {
		require.NoError(t, os.WriteFile(filepath.Join(own, name), []byte(v), 0o644))
	}
	self := filepath.Join(own, "conductor-42.self", "cgroup.procs")
	require.NoError(t, os.Mkdir(filepath.Dir(self), 0o755))
	require.NoError(t, os.WriteFile(self, nil, 0o644))
	h := &Host{name: "conductor-42"}
	got := h.handDown(Layout{Unified: own}, "conductor")
	require.ElementsMatch(t, []string{Memory, Pids, CPU}, got)
	require.Empty(t, h.notes)
	b, err := os.ReadFile(self)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(os.Getpid()), string(b), "this process moved out first")
	b, err = os.ReadFile(filepath.Join(own, "cgroup.subtree_control"))
	require.NoError(t, err)
	require.Equal(t, "+cpu +memory +pids", string(b))
}

// running reports whether process pid runs: it exists and is no zombie
// (one killed is a zombie until its new parent, init, reaps it).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && !strings.HasPrefix(string(b[i+1:]), " Z")
}
