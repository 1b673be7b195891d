package cgroup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hier is one hierarchy a Host uses: the cgroup2 one (ctls lists the
// controllers it hands down, maybe none) or a v1 one (ctls: the
// controllers of ours mounted there).
type hier struct {
	v2   bool
	ctls []string
	dir  string // the Host's, Group's or Leaf's directory in it
}

func (h hier) has(ctl string) bool { return slices.Contains(h.ctls, ctl) }

// join returns h for the child name of its directory.
func (h hier) join(name string) hier {
	h.dir = filepath.Join(h.dir, name)
	return h
}

// Host is the subtree of one supervising process: a directory named
// PREFIX-PID-RANDOM under the process's own cgroup in each hierarchy it
// uses, which the process holds an exclusive flock on while it lives, so
// that no other supervisor takes it for abandoned (see sweep). Its methods
// are safe for concurrent use: it is not changed after Open.
type Host struct {
	name  string
	hiers []hier
	locks []*os.File // one per hierarchy's subtree directory, flocked
	// home is this process's own cgroup in each v1 hierarchy (index as
	// hiers; "" for cgroup2): where the forking thread goes back to.
	home []string
	// notes say which controllers the Host lacks, and why.
	notes []string
}

// Open makes this process's subtree, named prefix-PID-RANDOM, in every
// hierarchy of l it can use, and locks it. First it removes the subtrees
// of the same prefix that no process holds locked (their supervisor is
// gone), killing what runs in them (a supervisor that was killed leaves
// its workers' descendants there); swept says what it removed.
//
// On a cgroup2 hierarchy whose cgroup is not the root and does not yet
// hand its controllers down, Open moves this process into a leaf of its
// own (PREFIX-PID.self) so that the cgroup holds no process and can hand
// them down (the no-internal-process rule); if other processes remain
// there, the controllers are not handed down and Notes says so.
func Open(l Layout, prefix string) (h *Host, swept []Swept, err error) {
	h = &Host{name: prefix + "-" + strconv.Itoa(os.Getpid()) + "-" + randomSuffix()}
	if l.Unified != "" {
		swept = append(swept, sweep(l.Unified, prefix, true)...)
		if !h.canKill(l.Unified) {
			h.notes = append(h.notes, "cgroup2 not used: no cgroup.kill (Linux 5.14 or later)")
			l.Unified = ""
		}
	}
	var v1ctls []string
	if l.Unified != "" {
		ctls := h.handDown(l, prefix)
		h.hiers = append(h.hiers, hier{v2: true, ctls: ctls, dir: l.Unified})
		h.home = append(h.home, "")
		for _, c := range []string{Memory, Pids, CPU} {
			if !slices.Contains(ctls, c) {
				v1ctls = append(v1ctls, c)
			}
		}
	} else {
		v1ctls = controllers
	}
	for _, c := range v1ctls {
		dir, ok := l.V1[c]
		if !ok {
			continue
		}
		if i := slices.IndexFunc(h.hiers, func(x hier) bool { return !x.v2 && x.dir == dir }); i >= 0 {
			h.hiers[i].ctls = append(h.hiers[i].ctls, c) // co-mounted
			continue
		}
		swept = append(swept, sweep(dir, prefix, false)...)
		h.hiers = append(h.hiers, hier{ctls: []string{c}, dir: dir})
		h.home = append(h.home, dir)
	}
	if len(h.hiers) == 0 {
		return nil, swept, ErrNoCgroups
	}
	for i := range h.hiers {
		h.hiers[i] = h.hiers[i].join(h.name)
		err := mkdir(h.hiers[i])
		if err == nil {
			var lock *os.File
			if lock, err = lockDir(h.hiers[i].dir); err == nil {
				h.locks = append(h.locks, lock)
			} else {
				_ = syscall.Rmdir(h.hiers[i].dir)
			}
		}
		if err != nil {
			h.hiers = h.hiers[:i]
			_ = h.Close()
			return nil, swept, err
		}
	}
	for _, c := range []string{Memory, Pids, CPU} {
		if !h.Has(c) {
			h.notes = append(h.notes, "no "+c+" controller")
		}
	}
	return h, swept, nil
}

// canKill reports whether the cgroups made under the cgroup2 cgroup own
// have cgroup.kill, which a Host needs there (and which comes with every
// kernel that has clone3 CLONE_INTO_CGROUP). It makes the Host's directory
// to see, and removes it.
func (h *Host) canKill(own string) bool {
	dir := filepath.Join(own, h.name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return true // Open will fail on it, with the error
	}
	defer syscall.Rmdir(dir)
	_, err := os.Stat(filepath.Join(dir, "cgroup.kill"))
	return err == nil
}

// handDown returns the controllers of ours that l's cgroup2 cgroup hands
// to its children, asking it to hand down those it may but does not.
func (h *Host) handDown(l Layout, prefix string) []string {
	own := l.Unified
	avail := intersect(words(filepath.Join(own, "cgroup.controllers")), []string{Memory, Pids, CPU})
	enabled := intersect(words(filepath.Join(own, "cgroup.subtree_control")), avail)
	need := slices.DeleteFunc(slices.Clone(avail), func(c string) bool { return slices.Contains(enabled, c) })
	if len(need) == 0 {
		return enabled
	}
	var self string
	if !l.UnifiedRoot {
		// The no-internal-process rule: own must hold no process to hand
		// controllers down. Move this process into a leaf of its own.
		self = filepath.Join(own, h.name+".self")
		err := os.Mkdir(self, 0o755)
		if errors.Is(err, fs.ErrExist) {
			err = nil
		}
		if err == nil {
			err = write(self, "cgroup.procs", strconv.Itoa(os.Getpid()))
		}
		if err != nil {
			h.notes = append(h.notes, fmt.Sprintf("cgroup2 controllers %s not handed down: cannot move this process out of %s: %v", strings.Join(need, ", "), own, err))
			_ = syscall.Rmdir(self)
			return enabled
		}
	}
	plus := "+" + strings.Join(need, " +")
	if err := write(own, "cgroup.subtree_control", plus); err != nil {
		why := err.Error()
		if errors.Is(err, syscall.EBUSY) {
			why = "other processes are in " + own
		}
		h.notes = append(h.notes, fmt.Sprintf("cgroup2 controllers %s not handed down: %s", strings.Join(need, ", "), why))
		if self != "" { // back where it was
			_ = write(own, "cgroup.procs", strconv.Itoa(os.Getpid()))
			_ = syscall.Rmdir(self)
		}
		return enabled
	}
	return avail
}

// Has reports whether the Host's groups have controller ctl (Memory, Pids
// or CPU), in cgroup2 or v1.
func (h *Host) Has(ctl string) bool {
	return slices.ContainsFunc(h.hiers, func(x hier) bool { return x.has(ctl) })
}

// Notes say which controllers the Host lacks, and why.
func (h *Host) Notes() []string { return h.notes }

// String describes the Host for a log line: where its subtree is and which
// hierarchy holds each controller.
func (h *Host) String() string {
	var parts []string
	for _, x := range h.hiers {
		switch {
		case x.v2 && len(x.ctls) == 0:
			parts = append(parts, "cgroup2 "+x.dir+" (membership and kill)")
		case x.v2:
			parts = append(parts, "cgroup2 "+x.dir+" ("+strings.Join(x.ctls, ", ")+")")
		default:
			parts = append(parts, "v1 "+strings.Join(x.ctls, ",")+" "+x.dir)
		}
	}
	return strings.Join(parts, "; ")
}

// Close removes the subtree, killing what is left in it.
func (h *Host) Close() error {
	var errs []error
	for _, x := range h.hiers {
		if err := removeTree(x, time.Now().Add(killTimeout)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range h.locks {
		l.Close()
	}
	return errors.Join(errs...)
}

// NewGroup makes a group called name in the subtree.
func (h *Host) NewGroup(name string) (*Group, error) {
	g := &Group{h: h, hiers: make([]hier, len(h.hiers))}
	for i, x := range h.hiers {
		g.hiers[i] = x.join(name)
		if err := mkdir(g.hiers[i]); err != nil {
			g.hiers = g.hiers[:i]
			_ = g.Remove()
			return nil, err
		}
	}
	return g, nil
}

// mkdir makes the cgroup of x; in cgroup2, it hands x's controllers down.
func mkdir(x hier) error {
	if err := os.Mkdir(x.dir, 0o755); err != nil {
		return fmt.Errorf("make cgroup: %w", err)
	}
	if x.v2 && len(x.ctls) > 0 {
		if err := write(x.dir, "cgroup.subtree_control", "+"+strings.Join(x.ctls, " +")); err != nil {
			_ = syscall.Rmdir(x.dir)
			return err
		}
	}
	return nil
}

// Swept is a subtree that Open removed: its supervisor was gone.
type Swept struct {
	Dir    string
	Killed []string // the processes it killed there: "PID (COMMAND)"
	Err    error    // why the subtree could not all be removed, if so
}

// sweepAge is how old an unlocked subtree must be to be swept: one just
// made may not be locked yet by the supervisor making it. A variable for
// tests.
var sweepAge = 10 * time.Second

// sweep removes the subtrees prefix-* under parent that no process holds
// locked and that are older than sweepAge, killing what runs in them. A
// supervisor's lock goes with it, however it ends (and whatever pid
// namespace it is in: a pid says nothing across namespaces); a leaf
// prefix-*.self holds a supervisor itself, and is only removed if empty.
func sweep(parent, prefix string, v2 bool) []Swept {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var out []Swept
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), prefix+"-") {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		if strings.HasSuffix(e.Name(), ".self") {
			_ = syscall.Rmdir(dir) // fails while a process is in it
			continue
		}
		if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < sweepAge {
			continue
		}
		lock, err := lockDir(dir)
		if err != nil {
			continue // held: its supervisor lives
		}
		s := Swept{Dir: dir, Killed: describeTree(dir)}
		s.Err = removeTree(hier{v2: v2, dir: dir}, time.Now().Add(killTimeout))
		lock.Close()
		out = append(out, s)
	}
	return out
}

// lockDir opens the directory dir and takes an exclusive flock on it,
// without waiting; the lock lasts until the file is closed or this
// process ends.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cgroup %s: %w", dir, err)
	}
	return f, nil
}

// randomSuffix returns 8 random hex digits: two supervisors of one pid (in
// two pid namespaces) do not name their subtrees alike.
func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// describeTree names the processes in the cgroup dir and below, as
// "PID (COMMAND)".
func describeTree(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			for _, pid := range procs(path) {
				comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
				out = append(out, strconv.Itoa(pid)+" ("+strings.TrimSpace(string(comm))+")")
			}
		}
		return nil
	})
	return out
}

func intersect(a, b []string) []string {
	return slices.DeleteFunc(slices.Clone(a), func(s string) bool { return !slices.Contains(b, s) })
}

// words returns the words of the file at path, none if it cannot be read.
func words(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}
