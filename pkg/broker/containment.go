package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/conductor-run/conductor/internal/cgroup"
)

// How worker processes are contained: in cgroups where the host allows
// it, else in process groups only (docs/supervision.md, "Containment").
// The choice is the process's, made once; each pool then has a cgroup
// (its cpu and pids limits) and each process a leaf (its memory limit),
// which the stop of the process kills as a whole. No goroutine.

// Cgroups says whether the pools of a process are contained in cgroups.
type Cgroups string

// The Cgroups modes.
const (
	// CgroupsAuto (the default) contains every pool in a cgroup where the
	// host allows it (Linux, cgroup v2 with delegation or cgroup v1, a
	// writable hierarchy), and in process groups only where it does not.
	CgroupsAuto Cgroups = "auto"
	// CgroupsOff contains pools in process groups only.
	CgroupsOff Cgroups = "off"
)

// ParseCgroups parses a Cgroups mode: "auto" or "off".
func ParseCgroups(s string) (Cgroups, error) {
	switch m := Cgroups(s); m {
	case CgroupsAuto, CgroupsOff:
		return m, nil
	}
	return "", fmt.Errorf("broker: cgroups %q: want %q or %q", s, CgroupsAuto, CgroupsOff)
}

// Containment says how the pools of this process are contained.
type Containment struct {
	// Cgroups reports whether pools get cgroups.
	Cgroups bool
	// Detail says where the cgroups are and which hierarchy holds each
	// controller, or why there are none.
	Detail string
}

// cgroupPrefix names this process's subtree, cgroupPrefix-PID, under its
// own cgroup in each hierarchy.
const cgroupPrefix = "conductor"

// containment is the process's choice. mu guards it; the host is opened
// by the first pool that starts and closed by the last that stops (refs).
// Lock order: Pool.mu (Start holds it) before containment.mu.
var containment struct {
	mu      sync.Mutex
	mode    Cgroups // "" until chosen; then the choice of SetCgroups or the first pool
	layout  cgroup.Layout
	why     string       // with mode CgroupsAuto: why cgroups are not used, "" if they are
	host    *cgroup.Host // open while refs > 0, or after a SetCgroups
	refs    int
	groups  int // pool groups made, for their names
	decided Containment
}

// SetCgroups chooses how the pools of this process that start from now on
// are contained, and logs one line saying how, or why cgroups cannot be
// used (then pools fall back to process groups). It finds that out now,
// once: a later call with the same mode returns the same answer without a
// log line. A pool started with no choice made chooses CgroupsAuto.
func SetCgroups(mode Cgroups, log *slog.Logger) (Containment, error) {
	if _, err := ParseCgroups(string(mode)); err != nil {
		return Containment{}, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	containment.mu.Lock()
	defer containment.mu.Unlock()
	return chooseLocked(mode, log), nil
}

// chooseLocked makes the choice of mode, unless it was made; mu is held.
func chooseLocked(mode Cgroups, log *slog.Logger) Containment {
	if containment.mode == mode {
		return containment.decided
	}
	containment.mode = mode
	if mode == CgroupsOff {
		containment.why = "turned off"
		containment.decided = Containment{Detail: "turned off"}
		log.Info("cgroups off: worker processes contained by process groups only")
		return containment.decided
	}
	containment.why = ""
	if containment.host == nil {
		containment.why = openHostLocked(log)
	}
	if containment.why != "" {
		containment.decided = Containment{Detail: containment.why}
		log.Warn("cgroups not used: worker processes contained by process groups only", "reason", containment.why)
		return containment.decided
	}
	h := containment.host
	containment.decided = Containment{Cgroups: true, Detail: h.String()}
	attrs := []any{"cgroups", h.String()}
	if notes := h.Notes(); len(notes) > 0 {
		attrs = append(attrs, "notes", strings.Join(notes, "; "))
	}
	log.Info("cgroups: each pool and worker process in a cgroup of its own", attrs...)
	return containment.decided
}

// openHostLocked opens the host's subtree and returns "", or why it
// cannot; mu is held. The layout is read once per process: a move of this
// process into a leaf of its own (see cgroup.Open) changes what
// /proc/self/cgroup says.
func openHostLocked(log *slog.Logger) string {
	if containment.layout.V1 == nil {
		l, err := cgroup.ReadLayout()
		if err != nil {
			return cgroupReason(err)
		}
		containment.layout = l
	}
	h, swept, err := cgroup.Open(containment.layout, cgroupPrefix)
	if err != nil {
		return cgroupReason(err)
	}
	for _, s := range swept {
		// A subtree no process held locked: its supervisor has ended.
		log.Warn("cgroups: removed the cgroups of a supervisor that has ended, and the processes left in them",
			"cgroup", s.Dir, "killed", s.Killed, "err", s.Err)
	}
	containment.host = h
	return ""
}

// cgroupReason says why cgroups cannot be used, for the log line.
func cgroupReason(err error) string {
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return fmt.Sprintf("%v (making a cgroup needs root, or a cgroup delegated to this user, on a writable cgroup file system)", err)
	case errors.Is(err, cgroup.ErrNoCgroups):
		return "no cgroup file system is mounted (/proc/self/cgroup, /proc/self/mountinfo)"
	}
	return err.Error()
}

// acquireCgroups returns the host's subtree for a pool that starts, or
// nil and why pools are not contained; each call with a non-nil result
// must be paired with a releaseCgroups once the pool has stopped.
func acquireCgroups(log *slog.Logger) (*cgroup.Host, string) {
	containment.mu.Lock()
	defer containment.mu.Unlock()
	if containment.mode == "" {
		chooseLocked(CgroupsAuto, log)
	}
	if containment.mode == CgroupsOff || containment.why != "" {
		return nil, containment.why
	}
	if containment.host == nil {
		if why := openHostLocked(log); why != "" {
			return nil, why
		}
	}
	containment.refs++
	return containment.host, ""
}

// releaseCgroups undoes one acquireCgroups; the last removes the subtree.
func releaseCgroups(log *slog.Logger) {
	containment.mu.Lock()
	defer containment.mu.Unlock()
	containment.refs--
	if containment.refs == 0 && containment.host != nil {
		if err := containment.host.Close(); err != nil {
			log.Warn("cgroups: cannot remove this process's cgroups", "err", err)
		}
		containment.host = nil
	}
}

// poolCgroupName returns a name for a pool's group, distinct within the
// process (pools of one name may run at once in a Go program).
func poolCgroupName(pool string) string {
	containment.mu.Lock()
	defer containment.mu.Unlock()
	containment.groups++
	return pool + "-" + strconv.Itoa(containment.groups)
}

// startCgroup makes the pool's group, when pools are contained, and sets
// its limits. A pool that cannot have one runs uncontained, and says so.
func (p *Pool) startCgroup() {
	spec := p.gen.spec
	var why string
	if p.test.noCgroups {
		why = "turned off for this pool"
	} else {
		var h *cgroup.Host
		if h, why = acquireCgroups(p.log); h != nil {
			g, err := h.NewGroup(poolCgroupName(spec.Name))
			if err != nil {
				releaseCgroups(p.log)
				p.log.Error("cgroups: no cgroup for the pool; its workers are contained by process groups only", "err", err)
				why = err.Error()
			} else {
				p.cg, p.cgHost = g, h
			}
		}
	}
	if p.cg == nil {
		if spec.CPU > 0 || spec.Pids > 0 {
			p.log.Warn("cpu and pids limits not enforced: the pool has no cgroup", "reason", why)
		}
		return
	}
	p.setLimits(spec)
}

// setLimits sets the cpu and pids limits of spec on the pool's group.
func (p *Pool) setLimits(spec Spec) {
	if p.cg == nil {
		if spec.CPU > 0 || spec.Pids > 0 {
			p.log.Warn("cpu and pids limits not enforced: the pool has no cgroup")
		}
		return
	}
	if err := p.cg.SetLimits(cgroup.Limits{CPU: spec.CPU, Pids: int64(spec.Pids)}); err != nil {
		p.log.Warn("cgroups: pool limits not (all) set", "err", err)
	}
	if spec.MaxRSS > 0 && !p.cgHost.Has(cgroup.Memory) {
		p.log.Warn("max_rss is not a hard limit: no memory controller; workers over it are recycled")
	}
}

// stopCgroup removes the pool's group, once every process of the pool was
// reaped.
func (p *Pool) stopCgroup() {
	if p.cg == nil {
		return
	}
	if err := p.cg.Remove(); err != nil {
		p.log.Warn("cgroups: cannot remove the pool's cgroup", "err", err)
	}
	releaseCgroups(p.log)
}
