package cgroup

import (
	"errors"
	"math"
	"os"
	"slices"
	"strconv"
	"time"
)

// Group is the cgroup of a pool, in every hierarchy of its Host: it holds
// the pool's cpu and pids limits, and a Leaf per process.
type Group struct {
	h     *Host
	hiers []hier
}

// Limits are a Group's limits; the zero value of each field is none.
type Limits struct {
	// CPU is the number of CPUs' worth of time the group's processes may
	// use together, within each period of 100ms: cpu.max, or v1
	// cpu.cfs_quota_us.
	CPU float64
	// Pids caps the tasks (processes and threads) of the group: pids.max.
	Pids int64
}

// cpuPeriod is the period of a CPU limit, in microseconds: the kernel's
// default, 100ms.
const cpuPeriod = 100000

// MaxCPU bounds a CPU limit, in CPUs: far past any machine, well within
// the kernel's largest quota.
const MaxCPU = 1 << 16

// SetLimits sets the group's limits; a zero field lifts that limit. A
// limit whose controller the Host lacks is an error.
func (g *Group) SetLimits(l Limits) error {
	var errs []error
	if l.CPU > 0 || g.h.Has(CPU) {
		errs = append(errs, g.setCPU(l.CPU))
	}
	if l.Pids > 0 || g.h.Has(Pids) {
		errs = append(errs, g.setPids(l.Pids))
	}
	return errors.Join(errs...)
}

func (g *Group) setCPU(cpus float64) error {
	x, ok := g.hier(CPU)
	if !ok {
		return errors.New("cpu limit: no cpu controller")
	}
	quota := int64(-1)
	if cpus > 0 {
		cpus = min(cpus, MaxCPU)                             // unchecked, the product would overflow
		quota = max(int64(math.Round(cpus*cpuPeriod)), 1000) // the kernel's least: 1ms
	}
	if x.v2 {
		v := "max " + strconv.Itoa(cpuPeriod)
		if quota > 0 {
			v = strconv.FormatInt(quota, 10) + " " + strconv.Itoa(cpuPeriod)
		}
		return write(x.dir, "cpu.max", v)
	}
	if err := write(x.dir, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)); err != nil {
		return err
	}
	return write(x.dir, "cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
}

func (g *Group) setPids(n int64) error {
	x, ok := g.hier(Pids)
	if !ok {
		return errors.New("pids limit: no pids controller")
	}
	v := "max"
	if n > 0 {
		if bornIn(x) {
			// The forking thread is in the group while it forks (see
			// Leaf.EnterThread), and counts: one more, so that it takes
			// no room of the pool's. A fork into a full pool still fails,
			// its child being one too many.
			n++
		}
		v = strconv.FormatInt(n, 10)
	}
	return write(x.dir, "pids.max", v)
}

// hier returns the hierarchy of the group that has controller ctl.
func (g *Group) hier(ctl string) (hier, bool) {
	i := slices.IndexFunc(g.hiers, func(x hier) bool { return x.has(ctl) })
	if i < 0 {
		return hier{}, false
	}
	return g.hiers[i], true
}

// MemoryPeak returns the most memory the group's processes have used
// together (memory.peak, or v1 memory.max_usage_in_bytes), -1 if unknown.
// It includes what the leaves removed from it had charged.
func (g *Group) MemoryPeak() int64 {
	x, ok := g.hier(Memory)
	if !ok {
		return -1
	}
	return memoryPeak(x)
}

// memoryPeak reads the memory peak of the memory cgroup x, -1 if unknown.
func memoryPeak(x hier) int64 {
	name := "memory.max_usage_in_bytes"
	if x.v2 {
		name = "memory.peak"
	}
	b, err := os.ReadFile(x.dir + "/" + name)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(string(trimNL(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Remove kills what is left in the group and removes it.
func (g *Group) Remove() error {
	var errs []error
	for _, x := range g.hiers {
		if err := removeTree(x, time.Now().Add(killTimeout)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
