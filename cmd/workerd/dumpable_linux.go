package main

import "golang.org/x/sys/unix"

// undumpable makes workerd's /proc entries (its environment, the memory
// holding its token) readable by root only, not by its workers, which run
// as its user (docs/security.md). It returns the error, for a warning.
func undumpable() error { return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }
