package broker

import (
	"encoding/json"
	"time"
)

// EventKind says what an Event reports.
type EventKind string

// Kinds of worker events: Event.Index and Event.PID name the worker.
const (
	// EventWorkerStart: a process started; Reason is ReasonStart,
	// ReasonRestart, ReasonRecycle, ReasonUpgrade or ReasonResize.
	EventWorkerStart EventKind = "start"
	// EventWorkerReady: a worker said ready for the first time (a
	// ProtocolNone process: it started).
	EventWorkerReady EventKind = "ready"
	// EventWorkerExit: a process ended, or failed to start; Reason, Exit,
	// Code, Signal, OOM and Uptime say how.
	EventWorkerExit EventKind = "exit"
	// EventWorkerMessage: a worker sent a custom message ({"op":"message"}),
	// in Data.
	EventWorkerMessage EventKind = "message"
)

// Kinds of pool events: Event.Count is the pool's worker count.
const (
	// EventPoolFailed: the crash-loop breaker tripped; no worker restarts
	// until RetryAt. Error says why.
	EventPoolFailed EventKind = "failed"
	// EventPoolRecovered: restarts are allowed again after a failure.
	EventPoolRecovered EventKind = "recovered"
	// EventPoolDrained: a drain finished; no worker runs.
	EventPoolDrained EventKind = "drained"
	// EventPoolResumed: a drained pool started its workers again.
	EventPoolResumed EventKind = "resumed"
	// EventPoolResized: the worker count changed.
	EventPoolResized EventKind = "resized"
	// EventPoolRecycled: every worker was replaced.
	EventPoolRecycled EventKind = "recycled"
	// EventPoolUpgraded: every worker runs the new command line.
	EventPoolUpgraded EventKind = "upgraded"
	// EventPoolRollback: an upgrade failed its health check and was undone;
	// Error says why.
	EventPoolRollback EventKind = "rollback"
	// EventPoolStopped: the pool stopped for good. It is the last event.
	EventPoolStopped EventKind = "stopped"
)

// Reason says why a worker's process started or exited.
type Reason string

// Reasons a process started or exited.
const (
	ReasonStart   Reason = "start"   // the pool started, or resumed
	ReasonRestart Reason = "restart" // after the previous process ended on its own
	ReasonFailure Reason = "failure" // the process ended on its own (a crash, or no ready in time)
	ReasonRecycle Reason = "recycle" // replaced by age, jobs done, memory or a recycle command
	ReasonUpgrade Reason = "upgrade" // replaced by an upgrade, or a rollback
	ReasonResize  Reason = "resize"  // added or removed by a resize
	ReasonStop    Reason = "stop"    // stopped by a drain, restart or Stop
)

// Event is one supervision event of a pool or of one of its workers, as
// Config.OnEvent receives it. Fields that do not apply to its Kind are zero.
// The JSON names are those of the events workerd publishes.
type Event struct {
	// Time is when it happened, in UTC.
	Time time.Time `json:"time"`
	// Kind is what happened: one of the Event* constants.
	Kind EventKind `json:"kind"`
	// Host is the pool's Config.Host.
	Host string `json:"host"`
	// Pool is the pool's name (Spec.Name).
	Pool string `json:"pool"`
	// Index is the worker's slot index, 0 to Count-1, for a worker event.
	Index int `json:"index,omitempty"`
	// PID is the worker's process id, for a worker event; zero for an exit
	// whose process failed to start.
	PID int `json:"pid,omitempty"`
	// Reason says why a worker started or exited.
	Reason Reason `json:"reason,omitempty"`
	// Exit describes how a process ended ("exit status 2", "signal:
	// killed", "start failed: ..."), for EventWorkerExit.
	Exit string `json:"exit,omitempty"`
	// Code is the exit code of the process (-1 when a signal killed it).
	Code int `json:"code,omitempty"`
	// Signal is the name of the signal that killed the process, if any
	// ("killed").
	Signal string `json:"signal,omitempty"`
	// OOM is set on an exit the kernel's OOM killer caused, as far as the
	// pool can tell: a SIGKILL it did not send ended the process and the
	// host's count of OOM kills rose while it ran. Exit then reads "signal:
	// killed (out of memory: the kernel's OOM killer)".
	OOM bool `json:"oom,omitempty"`
	// Uptime is how long the process ran, for an exit, to the millisecond.
	Uptime Duration `json:"uptime,omitempty"`
	// Count is the pool's worker count, for a pool event.
	Count int `json:"count,omitempty"`
	// RetryAt is when a failed pool tries to start workers again, for
	// EventPoolFailed.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Error explains a failure or a rollback.
	Error string `json:"error,omitempty"`
	// Data is a worker's custom message, for EventWorkerMessage.
	Data json.RawMessage `json:"data,omitempty"`
}

// LogLine is one line a worker wrote to its stdout or stderr, as
// Config.OnOutput receives it. The JSON names are those of the lines
// workerd publishes.
type LogLine struct {
	// Time is when the line was read, in UTC.
	Time time.Time `json:"time"`
	// Host is the pool's Config.Host.
	Host string `json:"host"`
	// Pool is the pool's name (Spec.Name).
	Pool string `json:"pool"`
	// Index is the worker's slot index, 0 to Count-1.
	Index int `json:"index"`
	// PID is the process id of the worker that wrote the line.
	PID int `json:"pid"`
	// Stream is "stdout" or "stderr".
	Stream string `json:"stream"`
	// Line is the line, without its newline. A line over 64 KiB is cut
	// there and ends " [truncated]".
	Line string `json:"line"`
}
