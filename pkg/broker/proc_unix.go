//go:build unix && !linux

package broker

import "syscall"

// sysProcAttr puts the worker in its own process group, so that it and its
// children are signalled together. Pdeathsig is Linux only.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// residentBytes is not implemented outside Linux: it returns 0.
func residentBytes(int) int64 { return 0 }
