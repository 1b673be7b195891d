package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// killTimeout bounds the wait for a killed cgroup to empty when removing
// a Group or a Host: processes in uninterruptible sleep (a hung NFS read)
// can outlive it.
const killTimeout = 10 * time.Second

// killAll kills every process in the cgroup x.dir and below, and waits
// until there is none, or deadline. In cgroup2 it writes cgroup.kill and
// waits for cgroup.events to say "populated 0"; in v1 it kills every
// process listed, with the cgroup frozen if x is the freezer's, until none
// is listed.
func killAll(x hier, deadline time.Time) error {
	if x.v2 {
		if err := write(x.dir, "cgroup.kill", "1"); err == nil {
			return awaitEmpty(x.dir, deadline)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	freezer := x.has(Freezer)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 20*time.Millisecond) {
		if countProcs(x.dir) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %d processes still there after SIGKILL", x.dir, countProcs(x.dir))
		}
		if freezer {
			// Frozen, no process forks while the list is read and killed.
			_ = write(x.dir, "freezer.state", "FROZEN")
			awaitFrozen(x.dir, deadline)
		}
		killTree(x.dir)
		if freezer {
			_ = write(x.dir, "freezer.state", "THAWED") // the killed die as they thaw
		}
		time.Sleep(delay) // v1 says nothing when a cgroup empties
	}
}

// awaitFrozen waits until the v1 freezer cgroup dir is FROZEN, or deadline.
func awaitFrozen(dir string, deadline time.Time) {
	for delay := 50 * time.Microsecond; time.Now().Before(deadline); delay = min(2*delay, 5*time.Millisecond) {
		b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
		if err != nil || string(trimNL(b)) == "FROZEN" {
			return
		}
		time.Sleep(delay)
	}
}

// awaitEmpty waits until the cgroup2 cgroup dir has no process, below it
// included (cgroup.events: "populated 0"), or deadline. The kernel wakes a
// poll of cgroup.events (POLLPRI) when the file changes.
func awaitEmpty(dir string, deadline time.Time) error {
	f, err := os.Open(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return err
	}
	defer f.Close()
	var buf [256]byte
	for {
		n, err := f.ReadAt(buf[:], 0)
		if n == 0 && err != nil {
			return err
		}
		if Counter(buf[:n], "populated") == 0 {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("cgroup %s: %d processes still there after cgroup.kill", dir, countProcs(dir))
		}
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1); err != nil && !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// killListed sends SIGKILL to every process listed in the cgroup dir.
func killListed(dir string) {
	self := os.Getpid()
	for _, pid := range procs(dir) {
		if pid != self { // the forking thread of a v1 host may be in a leaf for a moment
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// countProcs returns how many processes are in the cgroup dir and below.
func countProcs(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			n += len(procs(path))
		}
		return nil
	})
	return n
}

// killTree sends SIGKILL to every process in the cgroup dir and below.
func killTree(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			killListed(path)
		}
		return nil
	})
}

// removeTree kills what is in the cgroup x.dir and below and removes
// them, deepest first. A cgroup that is not there is no error.
func removeTree(x hier, deadline time.Time) error {
	if _, err := os.Stat(x.dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	killErr := killAll(x, deadline)
	var dirs []string
	_ = filepath.WalkDir(x.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	var errs []error
	for _, d := range slices.Backward(dirs) {
		errs = append(errs, rmdir(d))
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(killErr, err)
	}
	return nil
}

// rmdir removes the empty cgroup dir. The kernel may take a moment to let
// a cgroup go after its last process was reaped (EBUSY): it tries for up
// to a second. A cgroup that is not there is no error.
func rmdir(dir string) error {
	deadline := time.Now().Add(time.Second)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		err := syscall.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, syscall.ENOENT):
			return nil
		case !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline):
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(delay)
	}
}

// procs returns the processes listed in the cgroup dir's cgroup.procs.
func procs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for f := range bytes.FieldsSeq(b) {
		if pid, err := strconv.Atoi(string(f)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// write writes value to the cgroup file dir/name.
func write(dir, name, value string) error {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

// writeIfThere is write, but a file that does not exist is no error.
func writeIfThere(dir, name, value string) error {
	if err := write(dir, name, value); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Counter returns the value of the line "key N" of b (a cgroup or /proc
// counters file), or -1 if b has no such line.
func Counter(b []byte, key string) int64 {
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if !ok || string(k) != key {
			continue
		}
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	return -1
}

func trimNL(b []byte) []byte { return bytes.TrimSpace(b) }
