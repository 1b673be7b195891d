package broker

// Counter reads "key N" from a cgroup or /proc file's contents; -1: none.
func Counter(b []byte, key string) int64 { return counter(b, key) }
