package broker

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/kballard/go-shellquote"

	"github.com/conductor-run/conductor/internal/cgroup"
	"github.com/conductor-run/conductor/internal/token"
)

// Protocol is how the processes of a pool talk to the broker.
type Protocol string

// The protocols a pool can speak.
const (
	// ProtocolChannel (the default) is a job worker speaking the channel
	// protocol of internal/proto on file descriptors 3 and 4.
	ProtocolChannel Protocol = "channel"
	// ProtocolNone is a service process: it takes no jobs and is only kept
	// alive. It gets no channel; with Spec.Listen it gets a listening socket.
	ProtocolNone Protocol = "none"
)

// Defaults of the Spec fields whose zero value means "use the default".
const (
	DefaultCount        = 1
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopTimeout  = 30 * time.Second
	DefaultKillTimeout  = 5 * time.Second
	DefaultMaxAttempts  = 3
	DefaultMaxCrashes   = 3

	DefaultRestartDelay    = 100 * time.Millisecond
	DefaultRestartFactor   = 2.0
	DefaultRestartMaxDelay = 10 * time.Second
	DefaultRestartReset    = 10 * time.Second

	// The crash-loop breaker, on by default: DefaultMaxFailedStarts
	// failed starts of a pool's workers within DefaultFailedStartWindow
	// pause its restarts (the pool is failed) until the oldest of them
	// leaves the window. MaxFailedStarts -1 (max_failed_starts=off) turns
	// it off.
	DefaultMaxFailedStarts   = 5
	DefaultFailedStartWindow = 10 * time.Second
)

// ErrBadSpec is wrapped by every error ParseSpec and Spec.Validate return.
var ErrBadSpec = errors.New("broker: bad pool spec")

// Spec describes a pool: what to run and how many copies. It comes from a
// --pool flag (ParseSpec) or from YAML (the yaml tags; durations as Go
// durations such as "30s", cmd and env as lists). The zero value of every
// optional field means its default.
type Spec struct {
	// Name is the pool's name and the job type it serves: 1 to 128 letters,
	// digits, '-' and '_'.
	Name string `yaml:"name"`
	// Count is the number of worker processes. Zero means DefaultCount.
	Count int `yaml:"count"`
	// Cmd is the command line: the program, then its arguments. A program
	// without a slash is looked up in PATH; a relative path is relative to Dir.
	Cmd []string `yaml:"cmd"`
	// Protocol is ProtocolChannel (when empty) or ProtocolNone.
	Protocol Protocol `yaml:"protocol"`
	// Listen, if set, is a TCP HOST:PORT the pool opens once when it starts;
	// every process inherits the listening socket. A ProtocolNone process
	// gets it as fd 3 in the systemd convention (LISTEN_FDS=1, LISTEN_PID
	// its own pid, LISTEN_FDNAMES the pool name); a ProtocolChannel process
	// gets it as fd 5. Either way CONDUCTOR_LISTEN_FD names the fd.
	Listen string `yaml:"listen"`
	// Upgrades are the command lines, besides Cmd, that an upgrade command
	// sent to workerd may name for this pool (each the program, then its
	// arguments). workerd refuses an upgrade to any other command
	// (docs/security.md, "Remote execution needs the host's consent"); with
	// none, it refuses every upgrade to a command other than Cmd. The broker
	// itself does not use them: Pool.Upgrade is a trusted Go caller's.
	Upgrades [][]string `yaml:"upgrades"`
	// Env holds extra KEY=VALUE variables, added to workerd's environment
	// less its credentials (CONDUCTOR_TOKEN), which a pool gets only if Env
	// sets them.
	Env []string `yaml:"env"`
	// Dir is the working directory of the processes; empty means workerd's.
	Dir string `yaml:"dir"`
	// ReadyTimeout bounds the time a channel worker takes to send its first
	// ready, and to read a job written to it. Zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
	// StopTimeout is the time a graceful stop gives in-flight jobs to
	// finish. Zero means DefaultStopTimeout.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// KillTimeout is the time a process gets to exit after the shutdown op,
	// and again after SIGTERM, before SIGKILL of its process group. Zero
	// means DefaultKillTimeout.
	KillTimeout time.Duration `yaml:"kill_timeout"`
	// JobTimeout, if set, bounds each attempt of a job (a job may set its
	// own): past it the worker gets the cancel op, then, KillTimeout later,
	// SIGTERM to its process group, then SIGKILL; the job is retried.
	JobTimeout time.Duration `yaml:"job_timeout"`
	// MaxCrashes is the number of attempts of a job in which its worker
	// died before the job is quarantined as dead (a poison job), whatever
	// MaxAttempts allows. The broker does not use it; the job Source does.
	// Zero means DefaultMaxCrashes.
	MaxCrashes int `yaml:"max_crashes"`
	// MaxAttempts is the number of attempts of a job before it goes dead.
	// The broker does not use it; the job Source does. Zero means
	// DefaultMaxAttempts.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxRestartsPerMinute is the pool's restart throttle: when its
	// workers have been restarted this many times within a minute, for
	// whatever reason, the pool is marked failed and no worker is
	// restarted until the minute allows another. Zero means no throttle.
	MaxRestartsPerMinute int `yaml:"max_restarts_per_minute"`
	// MaxFailedStarts is the pool's crash-loop breaker: when its workers
	// have failed this many starts within FailedStartWindow, the pool is
	// marked failed and no worker is restarted until the oldest of them
	// leaves the window. A failed start is a process that could not be
	// started, or ended by itself before its first ready (its start, for
	// ProtocolNone) or within a second of it, having finished no job. Zero means
	// DefaultMaxFailedStarts; -1 (max_failed_starts=off) turns the breaker
	// off.
	MaxFailedStarts int `yaml:"max_failed_starts"`
	// FailedStartWindow is the window of MaxFailedStarts. Zero means
	// DefaultFailedStartWindow.
	FailedStartWindow time.Duration `yaml:"failed_start_window"`
	// RestartDelay is the wait before the second restart in a row of a
	// worker; the first is immediate. Zero means DefaultRestartDelay.
	RestartDelay time.Duration `yaml:"restart_delay"`
	// RestartFactor multiplies the wait at each further restart in a row.
	// Zero means DefaultRestartFactor; it must be 1 or more.
	RestartFactor float64 `yaml:"restart_factor"`
	// RestartMaxDelay caps the wait. Zero means DefaultRestartMaxDelay.
	RestartMaxDelay time.Duration `yaml:"restart_max_delay"`
	// RestartReset is how long a worker must stay up (from its first
	// ready) for its next exit to count as the first in a row again. Zero
	// means DefaultRestartReset.
	RestartReset time.Duration `yaml:"restart_reset"`
	// Recycle, if set, replaces each worker once it has run this long
	// (give or take 10%, so that workers started together are not
	// replaced together).
	Recycle time.Duration `yaml:"recycle"`
	// MaxJobs, if set, replaces a worker once it has finished this many jobs.
	MaxJobs int `yaml:"max_jobs"`
	// MaxRSS, if set, bounds the memory of each worker process, its
	// descendants included, to this many bytes. Where the pool is contained
	// in cgroups (see Cgroups) it is a hard limit, its memory cgroup's
	// (memory.max, or v1 memory.limit_in_bytes, swap included): a worker
	// that reaches it is killed by the kernel's OOM killer, and its exit
	// says "out of memory". Elsewhere it is a soft one: a worker whose
	// resident memory exceeds it, checked every second, is recycled. In the
	// --pool and YAML forms it takes a unit: 512MB, 1GiB.
	MaxRSS int64 `yaml:"max_rss"`
	// CPU, if set, caps the CPU time of the pool's processes together at
	// this many CPUs' worth (1.5: one and a half cores), within every
	// 100ms: the pool's cgroup's cpu.max (v1 cpu.cfs_quota_us). At least
	// 0.01. Only where the pool is contained in cgroups with the cpu
	// controller; elsewhere the pool logs that it is not enforced.
	CPU float64 `yaml:"cpu"`
	// Pids, if set, caps the tasks (processes and threads: a Go program
	// runs several threads) of the pool's processes together: the pool's
	// cgroup's pids.max. A fork or thread past it fails (EAGAIN). Only where
	// the pool is contained in cgroups with the pids controller; elsewhere
	// the pool logs that it is not enforced.
	Pids int `yaml:"pids"`
}

// ParseSpec parses the --pool form of a Spec: comma-separated key=value
// pairs with cmd= last, taking the rest of the string as a command line
// split as a shell splits words:
//
//	name=squares,count=2,ready_timeout=10s,cmd=./bin/squares-worker --label 'a b'
//
// Keys are the yaml names of the Spec fields (name, count, cmd, protocol,
// listen, dir, env, upgrade (one command line of Upgrades), ready_timeout, stop_timeout, kill_timeout,
// job_timeout, max_attempts, max_crashes, max_restarts_per_minute,
// max_failed_starts (a number, or off), failed_start_window, restart_delay, restart_factor,
// restart_max_delay, restart_reset, recycle, max_jobs, max_rss, cpu (a
// number of CPUs such as 1.5, at least 0.01), pids (a whole number, at
// least 1)).
// env=KEY=VALUE and upgrade=COMMAND LINE may repeat; no other key may.
// Values other than cmd cannot hold a comma: an upgrade's command line is
// the text up to the next comma, split as cmd is (a command line with a
// comma goes in the config file):
//
//	name=squares,upgrade=./bin/squares-worker-v2 --fast,cmd=./bin/squares-worker
//
// The result is validated; defaults are not filled in.
func ParseSpec(s string) (Spec, error) {
	var spec Spec
	seen := make(map[string]bool)
	rest := s
	for rest != "" {
		if after, ok := strings.CutPrefix(strings.TrimLeft(rest, " "), "cmd="); ok {
			words, err := splitCmd(after)
			if err != nil {
				return Spec{}, specError(s, "cmd", err.Error())
			}
			spec.Cmd = words
			seen["cmd"] = true
			break
		}
		field, tail, _ := strings.Cut(rest, ",")
		rest = tail
		key, value, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok {
			return Spec{}, specError(s, field, "want key=value")
		}
		if seen[key] && key != "env" && key != "upgrade" {
			return Spec{}, specError(s, key, "given twice")
		}
		seen[key] = true
		if err := spec.set(key, value); err != nil {
			return Spec{}, specError(s, key, err.Error())
		}
	}
	if !seen["cmd"] {
		return Spec{}, specError(s, "cmd", "missing (it must come last)")
	}
	if key, problem := spec.check(); problem != "" {
		return Spec{}, specError(s, key, problem)
	}
	return spec, nil
}

// set sets the field of key from its --pool text.
func (s *Spec) set(key, value string) error {
	var err error
	switch key {
	case "name":
		s.Name = value
	case "count":
		s.Count, err = parseCount(value, 1)
	case "protocol":
		s.Protocol = Protocol(value)
	case "listen":
		s.Listen = value
	case "dir":
		s.Dir = value
	case "env":
		s.Env = append(s.Env, value)
	case "upgrade":
		var words []string
		if words, err = splitCmd(value); err == nil {
			s.Upgrades = append(s.Upgrades, words)
		}
	case "ready_timeout":
		s.ReadyTimeout, err = parseDuration(value)
	case "stop_timeout":
		s.StopTimeout, err = parseDuration(value)
	case "kill_timeout":
		s.KillTimeout, err = parseDuration(value)
	case "max_crashes":
		s.MaxCrashes, err = parseCount(value, 1)
	case "job_timeout":
		s.JobTimeout, err = parseDuration(value)
	case "max_attempts":
		s.MaxAttempts, err = parseCount(value, 1)
	case "max_restarts_per_minute":
		s.MaxRestartsPerMinute, err = parseCount(value, 0)
	case "max_failed_starts":
		if value == "off" {
			s.MaxFailedStarts = -1
			break
		}
		s.MaxFailedStarts, err = parseCount(value, -1)
	case "failed_start_window":
		s.FailedStartWindow, err = parseDuration(value)
	case "restart_delay":
		s.RestartDelay, err = parseDuration(value)
	case "restart_factor":
		s.RestartFactor, err = parseFactor(value)
	case "restart_max_delay":
		s.RestartMaxDelay, err = parseDuration(value)
	case "restart_reset":
		s.RestartReset, err = parseDuration(value)
	case "recycle":
		s.Recycle, err = parseDuration(value)
	case "max_jobs":
		s.MaxJobs, err = parseCount(value, 0)
	case "max_rss":
		s.MaxRSS, err = parseBytes(value)
	case "cpu":
		s.CPU, err = parseCPU(value)
	case "pids":
		s.Pids, err = parseCount(value, 1)
	default:
		return errors.New("unknown key")
	}
	return err
}

// splitCmd splits a command line as a shell splits words (quotes and
// backslashes, no expansion).
func splitCmd(line string) ([]string, error) {
	return shellquote.Split(line)
}

func parseCount(v string, min int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", v)
	}
	if n < min {
		return 0, fmt.Errorf("%d is less than %d", n, min)
	}
	return n, nil
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 30s or 1m", v)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", v)
	}
	return d, nil
}

func parseFactor(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number", v)
	}
	if f < 1 {
		return 0, fmt.Errorf("%v is less than 1", f)
	}
	return f, nil
}

// minCPU is the least CPU limit: the kernel's least quota, 1ms in every
// 100ms period.
const minCPU = 0.01

func parseCPU(v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number of CPUs such as 1.5", v)
	}
	if problem := checkCPU(f); problem != "" {
		return 0, errors.New(problem)
	}
	return f, nil
}

// checkCPU returns what is wrong with a CPU limit, or "".
func checkCPU(f float64) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return fmt.Sprintf("%v is not a number of CPUs", f)
	case f < 0:
		return "negative"
	case f != 0 && f < minCPU:
		return fmt.Sprintf("%v is less than %v (the kernel's least quota: 1ms in every 100ms)", f, minCPU)
	case f > cgroup.MaxCPU:
		return fmt.Sprintf("%v is more than %d CPUs", f, cgroup.MaxCPU)
	}
	return ""
}

// byteUnits are the units parseBytes takes, longest suffix first.
var byteUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	{"B", 1},
}

// parseBytes parses a size such as 512MB, 1GiB or 1048576 (bytes).
func parseBytes(v string) (int64, error) {
	num, mult := v, int64(1)
	for _, u := range byteUnits {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.n
			break
		}
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("%q is not a size such as 512MB or 1GiB", v)
	}
	if n < 0 || n*float64(mult) > math.MaxInt64 {
		return 0, fmt.Errorf("%q is out of range", v)
	}
	return int64(n * float64(mult)), nil
}

func specError(spec, key, problem string) error {
	return fmt.Errorf("%w %q: %s: %s", ErrBadSpec, spec, key, problem)
}

// Validate reports the first problem of s, naming the pool and the key. It
// does not fill in defaults.
func (s Spec) Validate() error {
	if key, problem := s.check(); problem != "" {
		return fmt.Errorf("%w: pool %q: %s: %s", ErrBadSpec, s.Name, key, problem)
	}
	return nil
}

// check returns the key and problem of the first invalid field, or "", "".
func (s Spec) check() (key, problem string) {
	if err := token.Check("pool name", s.Name); err != nil {
		return "name", err.Error()
	}
	if len(s.Cmd) == 0 || s.Cmd[0] == "" {
		return "cmd", "missing program"
	}
	switch s.Protocol {
	case "", ProtocolChannel, ProtocolNone:
	default:
		return "protocol", fmt.Sprintf("%q is not %q or %q", s.Protocol, ProtocolChannel, ProtocolNone)
	}
	if s.Listen != "" {
		if _, _, err := net.SplitHostPort(s.Listen); err != nil {
			return "listen", fmt.Sprintf("%q is not HOST:PORT", s.Listen)
		}
	}
	for _, up := range s.Upgrades {
		if len(up) == 0 || up[0] == "" {
			return "upgrades", "a command line without a program"
		}
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return "env", fmt.Sprintf("%q is not KEY=VALUE", kv)
		}
	}
	for _, c := range []struct {
		key string
		n   int64
	}{
		{"count", int64(s.Count)},
		{"ready_timeout", int64(s.ReadyTimeout)},
		{"stop_timeout", int64(s.StopTimeout)},
		{"kill_timeout", int64(s.KillTimeout)},
		{"max_attempts", int64(s.MaxAttempts)},
		{"job_timeout", int64(s.JobTimeout)},
		{"max_crashes", int64(s.MaxCrashes)},
		{"max_restarts_per_minute", int64(s.MaxRestartsPerMinute)},
		{"max_failed_starts", int64(s.MaxFailedStarts) + 1}, // -1 is off
		{"failed_start_window", int64(s.FailedStartWindow)},
		{"restart_delay", int64(s.RestartDelay)},
		{"restart_max_delay", int64(s.RestartMaxDelay)},
		{"restart_reset", int64(s.RestartReset)},
		{"recycle", int64(s.Recycle)},
		{"max_jobs", int64(s.MaxJobs)},
		{"max_rss", s.MaxRSS},
		{"pids", int64(s.Pids)},
	} {
		if c.n < 0 {
			return c.key, "negative"
		}
	}
	if problem := checkCPU(s.CPU); problem != "" {
		return "cpu", problem
	}
	if s.RestartFactor != 0 && s.RestartFactor < 1 {
		return "restart_factor", "less than 1"
	}
	return "", ""
}

// withDefaults returns s with every zero optional field set to its default.
func (s Spec) withDefaults() Spec {
	s.Count = cmp.Or(s.Count, DefaultCount)
	s.Protocol = cmp.Or(s.Protocol, ProtocolChannel)
	s.ReadyTimeout = cmp.Or(s.ReadyTimeout, DefaultReadyTimeout)
	s.StopTimeout = cmp.Or(s.StopTimeout, DefaultStopTimeout)
	s.KillTimeout = cmp.Or(s.KillTimeout, DefaultKillTimeout)
	s.MaxAttempts = cmp.Or(s.MaxAttempts, DefaultMaxAttempts)
	s.RestartDelay = cmp.Or(s.RestartDelay, DefaultRestartDelay)
	s.RestartFactor = cmp.Or(s.RestartFactor, DefaultRestartFactor)
	s.RestartMaxDelay = cmp.Or(s.RestartMaxDelay, DefaultRestartMaxDelay)
	s.RestartReset = cmp.Or(s.RestartReset, DefaultRestartReset)
	s.MaxFailedStarts = cmp.Or(s.MaxFailedStarts, DefaultMaxFailedStarts)
	s.FailedStartWindow = cmp.Or(s.FailedStartWindow, DefaultFailedStartWindow)
	return s
}
