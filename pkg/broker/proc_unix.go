//go:build unix && !linux

package broker

import (
	"syscall"
	"time"
)

// sysProcAttr puts the worker in its own process group, so that it and its
// children are signalled together. Pdeathsig is Linux only.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// threadID returns 0 outside Linux, which has no cgroups to move it to.
func threadID() int { return 0 }

// bornIn does nothing outside Linux, which has no cgroups.
func bornIn(*syscall.SysProcAttr, int) {}

// residentBytes returns 0 outside Linux, which has no /proc to read it from.
func residentBytes(int) int64 { return 0 }

// procStat returns zeros outside Linux.
func procStat(int) (int64, time.Duration) { return 0, 0 }

// oomKills returns -1 outside Linux: there is no count of OOM kills to read.
func oomKills() int64 { return -1 }
