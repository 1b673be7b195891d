package wire

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Commands conductord sends to a workerd on subject.Space.Control, one pool
// at a time. The reply (CommandReply) says whether the host accepted the
// command; its effect shows in the host's heartbeats and in events.
const (
	CommandDrain    = "drain"    // stop taking jobs, finish in-flight ones, stop the workers
	CommandResume   = "resume"   // start the workers of a drained pool again
	CommandRecycle  = "recycle"  // replace every worker, one at a time (hot reload)
	CommandRestart  = "restart"  // stop every worker gracefully, then start them all again
	CommandResize   = "resize"   // run Count workers
	CommandUpgrade  = "upgrade"  // rolling replacement with a new command line
	CommandShutdown = "shutdown" // stop the pool for good, within Timeout
	// CommandMessage writes Data to the worker of index Worker (the
	// channel's message op); CommandBroadcast to every worker of the pool
	// (of every pool with AllPools). Neither waits for the worker: the
	// reply tells how many workers it was queued for (Delivered).
	CommandMessage   = "message"
	CommandBroadcast = "broadcast"
)

// CommandOps lists every command, in the order the docs list them.
var CommandOps = []string{CommandDrain, CommandResume, CommandRecycle, CommandRestart, CommandResize, CommandUpgrade, CommandShutdown}

// commandFields lists the fields (by their JSON names) each command takes;
// any other field set is an error.
var commandFields = map[string][]string{
	CommandDrain:    {"timeout"},
	CommandRestart:  {"timeout"},
	CommandResize:   {"count"},
	CommandUpgrade:  {"cmd", "health"},
	CommandShutdown: {"timeout"},
}

// CheckCommandFields reports the first field in set, by its JSON name,
// that op does not take. It is the one check of a command's fields, for
// pkg/client's PoolCommand and the HTTP API's body alike (a body can set a
// field to its zero value, which a PoolCommand cannot tell from unset).
func CheckCommandFields(op string, set []string) error {
	for _, f := range set {
		if slices.Contains(commandFields[op], f) {
			continue
		}
		if len(commandFields[op]) == 0 {
			return fmt.Errorf("%s takes no %s (it takes no fields)", op, f)
		}
		return fmt.Errorf("%s takes no %s (it takes %s)", op, f, strings.Join(commandFields[op], ", "))
	}
	return nil
}

// AllPools, as Command.Pool, sends drain, resume, recycle, restart and
// shutdown to every pool of the host.
const AllPools = "*"

// Command is one command to the pool named Pool on one host.
type Command struct {
	Op   string `json:"op"`
	Pool string `json:"pool"`
	// Count is the new number of workers, for resize.
	Count int `json:"count,omitempty"`
	// Cmd is the new command line, for upgrade.
	Cmd []string `json:"cmd,omitempty"`
	// Health is how long the first upgraded worker must stay up (and ready)
	// before the rest are replaced; zero means the host's default.
	Health Duration `json:"health,omitempty"`
	// Timeout bounds a drain, restart or shutdown: in-flight jobs get this
	// long to finish before their workers are stopped; zero means the
	// pool's stop_timeout.
	Timeout Duration `json:"timeout,omitempty"`
	// Worker is the index of the worker a message goes to; Data the
	// message (JSON), for message and broadcast.
	Worker *int            `json:"worker,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// CommandReply is a host's answer to a Command.
type CommandReply struct {
	Host string `json:"host"`
	Pool string `json:"pool"`
	OK   bool   `json:"ok"`
	// Error says why the command was refused when OK is false.
	Error string `json:"error,omitempty"`
	// Delivered is how many workers a message or broadcast was queued
	// for.
	Delivered int `json:"delivered,omitempty"`
}

// Kinds of Event.
const (
	// Worker events (subject.Space.WorkerEvent).
	EventWorkerStart   = "start"   // a process started; Reason start, restart, recycle, upgrade or resize
	EventWorkerReady   = "ready"   // a channel worker said ready for the first time
	EventWorkerExit    = "exit"    // a process ended; Reason, Exit, Code, Signal, OOM say how
	EventWorkerMessage = "message" // a worker sent a custom message (Data)

	// Pool events (subject.Space.PoolEvent).
	EventPoolFailed    = "failed"    // crash-loop breaker tripped: restarts paused until RetryAt
	EventPoolRecovered = "recovered" // restarts allowed again after a failure
	EventPoolDrained   = "drained"   // a drain finished: no worker runs
	EventPoolResumed   = "resumed"   // a drained pool started again
	EventPoolResized   = "resized"   // Count changed
	EventPoolRecycled  = "recycled"  // every worker was replaced
	EventPoolUpgraded  = "upgraded"  // every worker runs the new command line
	EventPoolRollback  = "rollback"  // an upgrade failed its health check and was undone
	EventPoolStopped   = "stopped"   // the pool stopped for good
)

// Reasons a worker started or exited.
const (
	ReasonStart   = "start"   // the pool started
	ReasonRestart = "restart" // after the previous process ended on its own
	ReasonFailure = "failure" // the process ended on its own (a crash, or no ready in time)
	ReasonRecycle = "recycle" // replaced by age, jobs done, memory or a recycle command
	ReasonUpgrade = "upgrade" // replaced by an upgrade, or a rollback
	ReasonResize  = "resize"  // added or removed by a resize
	ReasonStop    = "stop"    // stopped by a drain, restart or shutdown
)

// Event is one supervision event of a pool or one of its workers.
type Event struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	Host string    `json:"host"`
	Pool string    `json:"pool"`
	// Index and PID name the worker, for a worker event.
	Index int `json:"index,omitempty"`
	PID   int `json:"pid,omitempty"`
	// Reason says why a worker started or exited, or why a pool event happened.
	Reason string `json:"reason,omitempty"`
	// Exit describes how a process ended ("exit status 2", "signal: killed");
	// Code is its exit code (-1 when killed by a signal) and Signal the
	// signal's name, if any.
	Exit   string `json:"exit,omitempty"`
	Code   int    `json:"code,omitempty"`
	Signal string `json:"signal,omitempty"`
	// OOM is set on an exit the kernel's OOM killer caused, as far as
	// workerd can tell: a SIGKILL it did not send ended the process and the
	// host's count of OOM kills rose while it ran. Exit then reads "signal:
	// killed (out of memory: the kernel's OOM killer)".
	OOM bool `json:"oom,omitempty"`
	// Uptime is how long the process ran, for an exit.
	Uptime Duration `json:"uptime,omitempty"`
	// Count is the pool's worker count, for a pool event.
	Count int `json:"count,omitempty"`
	// RetryAt is when a failed pool tries again.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Error explains a failure or a rollback.
	Error string `json:"error,omitempty"`
	// Data is a worker's custom message, for EventWorkerMessage.
	Data json.RawMessage `json:"data,omitempty"`
}

// LogLine is one line a worker wrote to its stdout or stderr.
type LogLine struct {
	Time   time.Time `json:"time"`
	Host   string    `json:"host"`
	Pool   string    `json:"pool"`
	Index  int       `json:"index"`
	PID    int       `json:"pid"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Line   string    `json:"line"`
	// Dropped counts the lines dropped before this one because the worker
	// wrote faster than they could be forwarded.
	Dropped int `json:"dropped,omitempty"`
}
