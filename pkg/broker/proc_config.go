package broker

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conductor-run/conductor/internal/cgroup"
	"github.com/conductor-run/conductor/internal/names"
)

// How a worker process is set up before it starts: its command, its
// environment and its files. No goroutine; startProc (proc.go) uses it.

// procConfig is everything needed to start one process of a slot. It is
// built once per slot by newProcConfig and read-only after.
type procConfig struct {
	path     string   // program to execute
	args     []string // argv, argv[0] included
	dir      string
	env      []string // the whole environment
	channel  bool     // pass fds 3 and 4 and speak the channel protocol
	listener *os.File // the Listen socket, or nil
	kill     time.Duration
	log      *slog.Logger // with host, pool and index
	// output, if set, also gets every line of stdout and stderr.
	output func(stream string, pid int, line string)
	// cg, if set, is the pool's cgroup: each process gets a leaf in it,
	// named by leafName, its memory limited to maxRSS if that is set.
	cg       *cgroup.Group
	leafName func() string
	maxRSS   int64
	pids     int // the pool's pids limit, to name it when a fork fails
	// noCloneInto: start outside the cgroup2 leaf, then move (a test's).
	noCloneInto bool
}

// resolveCommand returns the path of the program cmd names, as a process
// started in dir will see it: a name without a slash is looked up in PATH, a
// relative path is taken relative to dir. dir, if set, must exist.
func resolveCommand(cmd, dir string) (string, error) {
	if dir != "" {
		if fi, err := os.Stat(dir); err != nil {
			return "", err
		} else if !fi.IsDir() {
			return "", fmt.Errorf("dir %s: not a directory", dir)
		}
	}
	if strings.Contains(cmd, "/") && !filepath.IsAbs(cmd) && dir != "" {
		cmd = filepath.Join(dir, cmd)
	}
	path, err := exec.LookPath(cmd)
	if err != nil {
		return "", err
	}
	return filepath.Abs(path)
}

// newProcConfig sets up the command line and environment of the processes
// of slot index of a pool whose program was resolved to path.
func newProcConfig(spec Spec, path, host string, index int, listener *os.File, log *slog.Logger) procConfig {
	c := procConfig{
		path:     path,
		args:     slices.Clone(spec.Cmd),
		dir:      spec.Dir,
		channel:  spec.Protocol == ProtocolChannel,
		listener: listener,
		kill:     spec.KillTimeout,
		log:      log,
	}
	env := inheritedEnv(os.Environ())
	env = append(env, spec.Env...) // a credential the pool sets, it gets
	env = append(env,
		names.EnvProtocol+"="+string(spec.Protocol),
		names.EnvPool+"="+spec.Name,
		names.EnvWorkerIndex+"="+strconv.Itoa(index),
		names.EnvHost+"="+host,
	)
	if listener != nil && c.channel {
		env = append(env, names.EnvListenFD+"="+strconv.Itoa(listenFDChannel))
	}
	if listener != nil && !c.channel {
		env = append(env, names.EnvListenFD+"=3", names.EnvListenFDs+"=1", names.EnvListenFDNames+"="+spec.Name)
		// LISTEN_PID must be the process's own pid, known only after the
		// fork: a shell sets it, then execs the program in its place.
		c.args = append([]string{"sh", "-c", names.EnvListenPID + `=$$; export ` + names.EnvListenPID + `; exec "$@"`, spec.Cmd[0], path}, spec.Cmd[1:]...)
		c.path = "/bin/sh"
	}
	c.env = env
	return c
}

// withheldEnv are the variables of workerd's environment that its workers
// do not inherit: the socket-activation variables, which describe
// workerd's own sockets, not the worker's, and every credential that
// conductor's programs read, so that no job's code holds the host's
// secret (docs/security.md). A pool's env= may still set one explicitly.
// A new credential variable in internal/names belongs here too.
var withheldEnv = []string{
	names.EnvListenPID, names.EnvListenFDs, names.EnvListenFDNames,
	names.EnvToken,
}

// inheritedEnv is environ (workerd's environment) without withheldEnv.
func inheritedEnv(environ []string) []string {
	return slices.DeleteFunc(slices.Clone(environ), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(withheldEnv, k)
	})
}

// oomNote follows the exit of a process the kernel's OOM killer ended, in
// the crash report of its job and in its exit event.
const oomNote = " (out of memory: the kernel's OOM killer)"

// oomLimitNote replaces oomNote for a process whose cgroup has its max_rss
// as a hard limit.
const oomLimitNote = " (out of memory: max_rss reached; the kernel's OOM killer)"
