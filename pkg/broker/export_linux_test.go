package broker

import "github.com/conductor-run/conductor/internal/cgroup"

// Counter reads "key N" from a cgroup or /proc file's contents; -1: none.
func Counter(b []byte, key string) int64 { return cgroup.Counter(b, key) }
