package cgroup

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// NewLeaf makes a leaf called name in the group, for one process and its
// descendants; memMax, if positive, limits their memory, swap included, to
// that many bytes (memory.max, or v1 memory.limit_in_bytes).
func (g *Group) NewLeaf(name string, memMax int64) (*Leaf, error) {
	lf := &Leaf{h: g.h, hiers: make([]hier, len(g.hiers))}
	for i, x := range g.hiers {
		lf.hiers[i] = hier{v2: x.v2, ctls: x.ctls, dir: x.dir + "/" + name}
		if err := os.Mkdir(lf.hiers[i].dir, 0o755); err != nil {
			lf.hiers = lf.hiers[:i]
			_ = lf.Remove()
			return nil, fmt.Errorf("make cgroup: %w", err)
		}
	}
	if memMax > 0 {
		if err := lf.limitMemory(memMax); err != nil {
			_ = lf.Remove()
			return nil, err
		}
		lf.memLimited = true
	}
	return lf, nil
}

// Leaf is the cgroup of one process and its descendants, in every
// hierarchy of its Host.
type Leaf struct {
	h          *Host
	hiers      []hier // as the Host's
	memLimited bool
}

func (lf *Leaf) limitMemory(n int64) error {
	i := slices.IndexFunc(lf.hiers, func(x hier) bool { return x.has(Memory) })
	if i < 0 {
		return errors.New("memory limit: no memory controller")
	}
	x, v := lf.hiers[i], strconv.FormatInt(n, 10)
	if x.v2 {
		if err := write(x.dir, "memory.max", v); err != nil {
			return err
		}
		return writeIfThere(x.dir, "memory.swap.max", "0")
	}
	if err := write(x.dir, "memory.limit_in_bytes", v); err != nil {
		return err
	}
	return writeIfThere(x.dir, "memory.memsw.limit_in_bytes", v) // with swap accounting only
}

// MemoryLimited reports whether the leaf has a memory limit.
func (lf *Leaf) MemoryLimited() bool { return lf.memLimited }

// Dir returns the leaf's directory in the cgroup2 hierarchy, or, without
// one, in the first v1 hierarchy.
func (lf *Leaf) Dir() string { return lf.hiers[0].dir }

// OpenFD opens the leaf's cgroup2 directory, for a process to be born in
// it (clone3 CLONE_INTO_CGROUP, syscall.SysProcAttr.CgroupFD); nil
// without a cgroup2 hierarchy. The caller closes it.
func (lf *Leaf) OpenFD() (*os.File, error) {
	if !lf.hiers[0].v2 {
		return nil, nil
	}
	return os.OpenFile(lf.hiers[0].dir, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// EnterThread moves the thread tid of this process into the leaf's v1
// cgroups but a cpu one, so that a process it forks is born there;
// LeaveThread moves it back. cgroup2 does not move single threads: use
// OpenFD for it. A v1 cpu cgroup is left out: a thread in a pool's
// exhausted CPU quota would wait there for its next period, and with it
// the start of every pool's processes (a fork waits for its child's
// exec); the process joins it after its start (Adopt).
func (lf *Leaf) EnterThread(tid int) error {
	for _, x := range lf.hiers {
		if bornIn(x) {
			if err := write(x.dir, "tasks", strconv.Itoa(tid)); err != nil {
				return err
			}
		}
	}
	return nil
}

// bornIn reports whether a process is born in x by its forking thread
// (EnterThread): a v1 hierarchy other than a cpu one.
func bornIn(x hier) bool { return !x.v2 && !slices.Equal(x.ctls, []string{CPU}) }

// LeaveThread moves the thread tid back to this process's own v1 cgroups,
// trying each move a few times.
func (lf *Leaf) LeaveThread(tid int) error {
	var errs []error
	for i, x := range lf.hiers {
		if !bornIn(x) {
			continue
		}
		var err error
		for range 3 {
			if err = write(lf.h.home[i], "tasks", strconv.Itoa(tid)); err == nil {
				break
			}
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Adopt moves into the leaf, after its start, the process pid and what it
// has forked since: into the cgroup2 directory if it could not be born
// there (cloned is false: no OpenFD), and into a v1 cpu cgroup (see
// EnterThread). The processes it forked in the meantime are found in the
// leaf's first hierarchy, where they were born, and moved too, until none
// is left out.
func (lf *Leaf) Adopt(pid int, cloned bool) error {
	var errs []error
	for i, x := range lf.hiers {
		if (x.v2 && cloned) || bornIn(x) {
			continue
		}
		errs = append(errs, write(x.dir, "cgroup.procs", strconv.Itoa(pid)))
		if i == 0 {
			continue // no other hierarchy lists what it missed
		}
		for range 3 {
			in := procs(x.dir)
			missed := slices.DeleteFunc(procs(lf.hiers[0].dir), func(p int) bool { return slices.Contains(in, p) })
			if len(missed) == 0 {
				break
			}
			for _, p := range missed {
				_ = write(x.dir, "cgroup.procs", strconv.Itoa(p)) // it may have ended
			}
		}
	}
	return errors.Join(errs...)
}

// Procs returns the processes in the leaf.
func (lf *Leaf) Procs() []int { return procs(lf.hiers[0].dir) }

// OOMKills returns how many processes of the leaf the kernel's OOM killer
// has killed (memory.events, or v1 memory.oom_control: oom_kill), -1 if
// the leaf has no memory controller or the count cannot be read.
func (lf *Leaf) OOMKills() int64 {
	i := slices.IndexFunc(lf.hiers, func(x hier) bool { return x.has(Memory) })
	if i < 0 {
		return -1
	}
	x, name := lf.hiers[i], "memory.oom_control"
	if x.v2 {
		name = "memory.events"
	}
	b, err := os.ReadFile(x.dir + "/" + name)
	if err != nil {
		return -1
	}
	return Counter(b, "oom_kill")
}

// MemoryPeak returns the most memory the leaf's processes have used
// together (memory.peak, or v1 memory.max_usage_in_bytes), -1 if unknown.
func (lf *Leaf) MemoryPeak() int64 {
	i := slices.IndexFunc(lf.hiers, func(x hier) bool { return x.has(Memory) })
	if i < 0 {
		return -1
	}
	return memoryPeak(lf.hiers[i])
}

// HasMemory reports whether the leaf has a memory controller, whose
// OOMKills count is its own.
func (lf *Leaf) HasMemory() bool {
	return slices.ContainsFunc(lf.hiers, func(x hier) bool { return x.has(Memory) })
}

// Signal sends SIGKILL to every process of the leaf, now, without waiting
// for them to end: cgroup.kill, or one pass over the processes it lists.
func (lf *Leaf) Signal() {
	x := lf.hiers[0]
	if x.v2 {
		if err := write(x.dir, "cgroup.kill", "1"); err == nil {
			return
		}
	}
	killListed(x.dir)
}

// Kill kills every process of the leaf and waits until it has none, for
// up to timeout.
func (lf *Leaf) Kill(timeout time.Duration) error {
	return killAll(lf.killer(), time.Now().Add(timeout))
}

// killer returns the hierarchy to kill the leaf in: cgroup2, or v1 with
// the freezer if the Host has it.
func (lf *Leaf) killer() hier {
	if i := slices.IndexFunc(lf.hiers, func(x hier) bool { return x.has(Freezer) }); i >= 0 && !lf.hiers[0].v2 {
		return lf.hiers[i]
	}
	return lf.hiers[0]
}

// Remove removes the leaf; call it once it has no process (Kill).
func (lf *Leaf) Remove() error {
	var errs []error
	for _, x := range slices.Backward(lf.hiers) {
		errs = append(errs, rmdir(x.dir))
	}
	return errors.Join(errs...)
}
