package broker

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// sysProcAttr puts the worker in its own process group, so that it and its
// children are signalled together, and asks Linux to SIGKILL it if the
// thread that forked it dies (see spawner).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// residentBytes returns the resident set size of process pid, from
// /proc/<pid>/statm, or 0 if it cannot be read.
func residentBytes(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	fields := bytes.Fields(b)
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
