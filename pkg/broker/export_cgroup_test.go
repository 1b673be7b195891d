package broker

// NoCgroups keeps the processes of a pool made from cfg out of cgroups, as
// on a host that has none.
func NoCgroups(cfg *Config) { cfg.test.noCgroups = true }

// OnProcEnded sets the test signal of a pool made from cfg that fires when
// a process has ended, with the most memory its cgroup used (-1 without
// one). f must not block.
func OnProcEnded(cfg *Config, f func(pid int, memPeak int64)) { cfg.test.procEnded = f }

// Contained reports whether p has a cgroup.
func Contained(p *Pool) bool { return p.cg != nil }

// NoCloneInto has the processes of a pool made from cfg started outside
// their cgroup2 leaf and moved there right after, as where clone3 is
// refused.
func NoCloneInto(cfg *Config) { cfg.test.noCloneInto = true }
