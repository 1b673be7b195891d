package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What /proc says of a process: the chaos run's orphan checks and the
// soak's figures.

// dead reports whether pid is gone or a zombie: a process that no longer
// runs, whoever is left to reap it.
func dead(pid int) bool {
	return gone(pid) || procState(pid) == 'Z'
}

// procState returns the state letter of pid from /proc/<pid>/stat (R, S,
// T, Z...), or 0 if there is no such process.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// processesOf lists the live (not zombie) processes whose executable is
// path.
func processesOf(path string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != path || procState(pid) == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// statusField returns a number field of /proc/<pid>/status (VmRSS in
// kB, Threads), or -1.
func statusField(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	return -1
}

// rssBytes is pid's resident memory, or -1.
func rssBytes(pid int) int64 {
	kb := statusField(pid, "VmRSS")
	if kb < 0 {
		return -1
	}
	return kb << 10
}

// threads is pid's count of OS threads, or -1.
func threads(pid int) int64 { return statusField(pid, "Threads") }

// openFDs counts pid's open file descriptors, or -1.
func openFDs(pid int) int64 {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return int64(len(fds))
}

// dirBytes is the size of the files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed during the walk
		}
		if info, err := d.Info(); err == nil && d.Type().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
