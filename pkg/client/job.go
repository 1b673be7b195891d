package client

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is where a job is in its life.
type Status string

// The statuses of a job. Succeeded, Dead and Cancelled are final.
const (
	StatusQueued    Status = "queued"    // waiting for a worker (or its delay)
	StatusHeld      Status = "held"      // queued, fetched ahead by a host (HeldBy): no worker has it yet
	StatusRunning   Status = "running"   // a worker has run it for over 50ms
	StatusSucceeded Status = "succeeded" // it ended well; Result holds its result
	StatusFailed    Status = "failed"    // the last attempt failed; it will be retried
	StatusDead      Status = "dead"      // attempts exhausted or a permanent error
	StatusCancelled Status = "cancelled" // cancelled by a user before it ended
)

// Final reports whether s is an end state: succeeded, dead or cancelled.
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

// ParsePriority checks a priority given as text; "" is normal.
func ParsePriority(s string) (Priority, error) {
	switch p := Priority(s); p {
	case "":
		return PriorityNormal, nil
	case PriorityHigh, PriorityNormal, PriorityLow:
		return p, nil
	}
	return "", fmt.Errorf("bad priority %q: want high, normal or low", s)
}

// Job is the state of one job, as the conductor stores it under the job's
// id and GET /v1/jobs/{id} serves it (docs/api.md).
type Job struct {
	// ID names the job: a UUIDv7 the submitter picked, a name-based UUID
	// for an idempotent submission, <batch>-<index> in a batch, or the
	// Nats-Msg-Id of a job published straight to the stream.
	ID string `json:"id"`
	// Type is the job type: the pool of workers that runs it.
	Type string `json:"type"`
	// Status is where the job is in its life.
	Status Status `json:"status"`
	// Attempts counts the runs of the job by a worker so far.
	Attempts int `json:"attempts"`
	// Result is what the worker answered, for a job that succeeded.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is the last attempt's error, for a job that failed or is dead.
	Error string `json:"error,omitempty"`
	// Batch is the id of the batch the job belongs to, if any.
	Batch string `json:"batch,omitempty"`
	// Priority is high or low; empty for a normal job.
	Priority Priority `json:"priority,omitempty"`
	// Submitter is the credential the job was submitted on behalf of, if
	// any (a submitter's, through conductord): it may read the job.
	Submitter string `json:"submitter,omitempty"`
	// Payload is kept only for dead jobs, so they can be inspected and
	// queued again (Client.Requeue).
	Payload json.RawMessage `json:"payload,omitempty"`
	// PayloadRef is where the payload is when it was too large to travel
	// in the job's message: an object of the namespace's payload bucket
	// (docs/protocol.md, "Large payloads"). Shown while the job runs and
	// once it is dead, for its object is kept until it is queued again.
	PayloadRef *PayloadRef `json:"payload_ref,omitempty"`
	// CreatedAt is when the job was queued; UpdatedAt when its state last
	// changed.
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Skipped counts the deliveries that never reached a worker (it went
	// busy, was recycled or stopped first): they are not attempts.
	Skipped int `json:"skipped,omitempty"`
	// History has one entry per attempt, oldest first; the oldest are
	// dropped past 20, and HistoryDropped counts them.
	History        []Attempt `json:"history,omitempty"`
	HistoryDropped int       `json:"history_dropped,omitempty"`
	// Holder names the delivery of the job whose attempt wrote this state:
	// an opaque token by which workerd fences its writes, so that a late
	// write of an older attempt never replaces a newer one (see
	// docs/reliability.md).
	Holder string `json:"holder,omitempty"`
	// HeldBy is the host that holds a held job (Status held): the host
	// fetched it ahead, and none of its workers has taken it yet. It is
	// not stored: a Client that listens to the hosts' heartbeats
	// (Config.ListenHosts, as conductord's does) reads a queued job that
	// a live host says it holds as held (see docs/api.md, "Job status").
	HeldBy string `json:"held_by,omitempty"`
}

// Attempt is one run of a job by one worker process.
type Attempt struct {
	// Attempt numbers the run, from 1.
	Attempt int `json:"attempt"`
	// Host and PID name the worker process that ran it.
	Host string `json:"host"`
	PID  int    `json:"pid,omitempty"`
	// StartedAt is when the worker took the job; EndedAt when it ended,
	// zero while it runs.
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Error says why the attempt failed, if it did.
	Error string `json:"error,omitempty"`
	// Crashed is set when the worker process died holding the job (or was
	// stopped for its timeout).
	Crashed bool `json:"crashed,omitempty"`
	// OOMKilled is set when the worker was, most likely, killed by the
	// kernel's OOM killer (see docs/supervision.md).
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Lost is set when the attempt's host never reported its end (it was
	// lost, or stopped answering past the job's lease) and the job was
	// delivered again: it may have run, all or in part.
	Lost bool `json:"lost,omitempty"`
	// Superseded is set when the attempt ended after a newer attempt had
	// taken the job, or after the job had ended: its outcome (Error, or
	// none for a success) was not kept.
	Superseded bool `json:"superseded,omitempty"`
}

// Duration is a time.Duration that encodes in JSON as a Go duration
// string ("1.5s"), as the conductor's records write durations.
type Duration time.Duration

// String returns d as time.Duration writes it.
func (d Duration) String() string { return time.Duration(d).String() }

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

// PayloadRef names a payload passed by reference: its object in the
// namespace's payload bucket, its size in bytes and its SHA-256 digest as
// the object store writes it ("SHA-256=" and URL-safe base64).
type PayloadRef struct {
	Object string `json:"object"`
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
}
