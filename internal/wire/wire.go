// Package wire holds the records that conductord and workerd exchange over
// NATS and store in JetStream: the job state kept per job id, and the
// heartbeat each workerd announces with its workers. pkg/client has public
// twins of them (client.Job, client.Host, ...) with the same JSON; its
// TestRecords_SameJSONAsWire keeps the two in step.
package wire

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/conductor-run/conductor/internal/names"
)

// Status is where a job is in its life.
type Status string

// The statuses of a job. Succeeded and Dead are final.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"    // the last attempt failed; it will be retried
	StatusDead      Status = "dead"      // attempts exhausted or a permanent error
	StatusCancelled Status = "cancelled" // cancelled by a user before it ended
)

// Final reports whether s is an end state.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusDead || s == StatusCancelled
}

// Priority orders the queued jobs of one type: a worker takes a high job
// before any normal one, and a normal one before any low one. Jobs of the
// same priority run in the order they were queued.
type Priority string

// The priorities, highest first. A job without one is normal.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// Priorities lists every priority, highest first.
var Priorities = []Priority{PriorityHigh, PriorityNormal, PriorityLow}

// ParsePriority checks a priority given by a user; "" is normal.
func ParsePriority(s string) (Priority, error) {
	switch p := Priority(s); p {
	case "":
		return PriorityNormal, nil
	case PriorityHigh, PriorityNormal, PriorityLow:
		return p, nil
	}
	return "", fmt.Errorf("bad priority %q: want high, normal or low", s)
}

// Job is the state of one job, as stored in the state bucket under its id and
// served by GET /v1/jobs/{id}.
type Job struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Status   Status          `json:"status"`
	Attempts int             `json:"attempts"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Batch    string          `json:"batch,omitempty"`
	// Priority is high or low; empty for a normal job.
	Priority Priority `json:"priority,omitempty"`
	// Submitter is the credential the job was submitted on behalf of, if
	// any: it may read the job (docs/security.md).
	Submitter string `json:"submitter,omitempty"`
	// Payload is kept only for dead jobs, so they can be inspected and re-queued.
	Payload json.RawMessage `json:"payload,omitempty"`
	// PayloadRef is where the payload is when it was passed by reference
	// (too large to travel in the job's message): kept while the job runs
	// and once it is dead, for then its object is kept too.
	PayloadRef *PayloadRef `json:"payload_ref,omitempty"`
	CreatedAt  time.Time   `json:"created_at,omitzero"`
	UpdatedAt  time.Time   `json:"updated_at,omitzero"`
	// Skipped counts the deliveries that never reached a worker (it went
	// busy, was recycled or stopped first): they are not attempts.
	Skipped int `json:"skipped,omitempty"`
	// History has one entry per attempt, oldest first, at most MaxHistory;
	// HistoryDropped counts the oldest ones dropped for that bound.
	History        []Attempt `json:"history,omitempty"`
	HistoryDropped int       `json:"history_dropped,omitempty"`
	// Holder names the delivery whose attempt wrote the state last (see
	// Delivery): a write of an older delivery never replaces it, nor any
	// write a final state (docs/reliability.md, "Fencing").
	Holder string `json:"holder,omitempty"`
}

// Attempt is one run of a job by one worker process.
type Attempt struct {
	Attempt   int       `json:"attempt"`
	Host      string    `json:"host"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Error     string    `json:"error,omitempty"`
	// Crashed is set when the worker process died holding the job (or was
	// stopped for its timeout).
	Crashed bool `json:"crashed,omitempty"`
	// OOMKilled is set when the worker was, most likely, killed by the
	// kernel's OOM killer (see docs/supervision.md).
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Lost is set when the attempt's host never reported its end: the
	// host was lost, or stopped answering, and the job was delivered
	// again. It may have run, all or in part.
	Lost bool `json:"lost,omitempty"`
	// Superseded is set when the attempt ended after a newer attempt took
	// the job, or after the job ended: its outcome (Error, or none for a
	// success) was not kept.
	Superseded bool `json:"superseded,omitempty"`
}

// MaxHistory bounds Job.History; older attempts are dropped first.
const MaxHistory = 20

// Heartbeat is what a workerd announces on its host subject every interval:
// everything conductord knows about that host.
type Heartbeat struct {
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
	Interval Duration  `json:"interval"`
	// Leaving is set on the last heartbeat of a workerd that is stopping.
	Leaving bool         `json:"leaving,omitempty"`
	Pools   []PoolInfo   `json:"pools"`
	Workers []WorkerInfo `json:"workers"`
	// Lookups counts the host's lookups that conductord answered (its
	// cache could not) by how long they took, since workerd started.
	Lookups *Histogram `json:"lookups,omitempty"`
}

// PoolInfo describes one pool on one host.
type PoolInfo struct {
	Name     string `json:"name"`
	Count    int    `json:"count"`
	Protocol string `json:"protocol"`
	// State is new, waiting (for the job stream), starting (no worker
	// ready yet), running, backoff (no worker up: they wait to restart),
	// draining, drained, failed (the crash-loop breaker tripped, see
	// RetryAt; or the command cannot start, see Error), stopping or
	// stopped.
	State string `json:"state"`
	// Operation is a rolling change in progress: recycle or upgrade.
	Operation string `json:"operation,omitempty"`
	// Cmd is the command line new workers start with.
	Cmd []string `json:"cmd,omitempty"`
	// RetryAt is when a failed pool tries to start workers again.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Error says why the pool failed, or why its last upgrade rolled back.
	Error string `json:"error,omitempty"`
	// Reason says, in one line for people, why the pool is not plainly
	// running (the breaker's verdict and the last exit for failed; how
	// many workers are up for backoff and starting). Empty when all are up.
	Reason string `json:"reason,omitempty"`
	// Held counts the jobs the host holds for the pool and has handed to
	// no worker yet (fetched ahead); HeldJobs names the first
	// MaxHeldJobsListed of them.
	Held     int      `json:"held,omitempty"`
	HeldJobs []string `json:"held_jobs,omitempty"`
	// Run counts the pool's attempts by how long they ran; Wait its
	// jobs' first attempts by how long they waited since they were
	// queued (docs/stats.md). Since the host's workerd started.
	Run  *Histogram `json:"run,omitempty"`
	Wait *Histogram `json:"wait,omitempty"`
}

// MaxHeldJobsListed bounds PoolInfo.HeldJobs, and MaxHeldJobsPerHeartbeat
// the ids of all the pools of one heartbeat together, so that a heartbeat
// stays small however many jobs a host holds ahead (a job id is at most
// 128 bytes: 64 KiB of ids at most): the counts stay exact.
const (
	MaxHeldJobsListed       = 256
	MaxHeldJobsPerHeartbeat = 512
)

// WorkerInfo describes one worker process (or the slot of one being
// restarted), as GET /v1/workers lists it.
type WorkerInfo struct {
	Host     string `json:"host"`
	Pool     string `json:"pool"`
	Index    int    `json:"index"`
	PID      int    `json:"pid"`
	State    string `json:"state"`
	RSS      int64  `json:"rss"`
	JobsDone int64  `json:"jobs_done"`
	Restarts int    `json:"restarts"`
	Job      string `json:"job,omitempty"`
	// Counters are what the slot's processes counted (the count op).
	Counters map[string]float64 `json:"counters,omitempty"`
	// Queued counts the jobs queued in the worker behind Job (prefetch).
	Queued  int       `json:"queued,omitempty"`
	Started time.Time `json:"started,omitzero"`
	// CPU is the user and system CPU time the process has used.
	CPU Duration `json:"cpu,omitempty"`
	// Version counts the pool's command lines: 1 for the one it started
	// with, one more per upgrade.
	Version int `json:"version,omitempty"`
	// LastExit describes how the slot's previous process ended, if any
	// ("exit status 2", "signal: killed"), and LastExitAt when.
	LastExit   string    `json:"last_exit,omitempty"`
	LastExitAt time.Time `json:"last_exit_at,omitzero"`
	// Reason says, in one line for people, why the worker is in its state
	// when that is not plainly healthy (the last exit, its stderr's last
	// line and the restart time for backoff). Empty once it is up.
	Reason string `json:"reason,omitempty"`
}

// Duration is a time.Duration that encodes as a Go duration string ("1.5s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MaxError bounds the error of a job and of each attempt, in bytes: a
// longer one is cut, with a marker that says how much (CutError), so that
// a job's state always fits the store however its workers fail.
const MaxError = 4 << 10

// CutError returns s cut to MaxError bytes (on a UTF-8 boundary) with a
// marker saying how many bytes were cut, or s itself if it fits.
func CutError(s string) string {
	if len(s) <= MaxError {
		return s
	}
	marker := func(n int) string { return fmt.Sprintf(" … [%d bytes cut]", n) }
	keep := MaxError - len(marker(len(s)))
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + marker(len(s)-keep)
}

// FinalTTL reads, from the metadata of the state bucket's stream, how long
// a final state stays in the bucket once written (names.MetaFinalTTL,
// written by conductord); 0: for the bucket's TTL, when the stream sets
// none or allows no per-message TTL.
func FinalTTL(meta map[string]string, allowMsgTTL bool) (time.Duration, error) {
	v, ok := meta[names.MetaFinalTTL]
	if !ok || !allowMsgTTL {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("state bucket: bad %s %q", names.MetaFinalTTL, v)
	}
	return d, nil
}
