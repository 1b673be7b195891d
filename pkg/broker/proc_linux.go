package broker

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/conductor-run/conductor/internal/cgroup"
)

// sysProcAttr puts the worker in its own process group, so that it and its
// children are signalled together, and asks Linux to SIGKILL it if the
// thread that forked it dies (see spawner).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// threadID returns the id of the calling thread.
func threadID() int { return syscall.Gettid() }

// bornIn has a process started with attr born in the cgroup2 directory
// open as fd (clone3 CLONE_INTO_CGROUP).
func bornIn(attr *syscall.SysProcAttr, fd int) {
	attr.UseCgroupFD, attr.CgroupFD = true, fd
}

// residentBytes returns the resident set size of process pid, or 0 if it
// cannot be read.
func residentBytes(pid int) int64 {
	rss, _ := procStat(pid)
	return rss
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go supports.
const userHZ = 100

// procStat returns the resident set size and the user and system CPU time
// of process pid from one read of /proc/<pid>/stat, or zeros if it cannot
// be read. It is called for every worker at every heartbeat, so it reads
// with bare syscalls into a stack buffer.
func procStat(pid int) (rss int64, cpu time.Duration) {
	if pid <= 0 {
		return 0, 0
	}
	fd, err := syscall.Open("/proc/"+strconv.Itoa(pid)+"/stat", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0
	}
	var buf [1024]byte
	n, err := syscall.Read(fd, buf[:])
	syscall.Close(fd)
	if err != nil || n <= 0 {
		return 0, 0
	}
	// The command name, in parentheses, may hold spaces: count fields from
	// the last ')'. Field k of the line (1-based) is field k-3 after it:
	// utime 14, stime 15, rss 24 (in pages).
	b := buf[:n]
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0
	}
	var utime, stime, pages int64
	field := 0
	for f := range bytes.FieldsSeq(b[i+1:]) {
		switch field {
		case 11:
			utime, _ = strconv.ParseInt(string(f), 10, 64)
		case 12:
			stime, _ = strconv.ParseInt(string(f), 10, 64)
		case 21:
			pages, _ = strconv.ParseInt(string(f), 10, 64)
		}
		field++
		if field > 21 {
			break
		}
	}
	return pages * int64(os.Getpagesize()), time.Duration(utime+stime) * time.Second / userHZ
}

// vmstatPath is where Linux (4.13 and later) counts OOM kills: the line
// "oom_kill N".
const vmstatPath = "/proc/vmstat"

// oomKills returns how many processes the kernel's OOM killer has killed
// since boot, or -1 if that cannot be read. The count is the host's: it
// takes in every kill, whether the whole system or a memory cgroup ran out
// of memory, and whoever the victim. It is read twice per worker at most
// (before its start, and after its death if a SIGKILL ended it), so a plain
// read of the whole file will do.
func oomKills() int64 {
	b, err := os.ReadFile(vmstatPath)
	if err != nil {
		return -1
	}
	return cgroup.Counter(b, "oom_kill")
}
