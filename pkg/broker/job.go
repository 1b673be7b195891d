package broker

import (
	"context"
	"encoding/json"
	"time"
)

// Job is one job handed to a worker process of a pool.
type Job struct {
	ID      string
	Type    string
	Payload json.RawMessage
	// Attempt counts the attempts at the job, from 1.
	Attempt int
	// Redelivered is set when an earlier attempt at the job may have run,
	// all or in part (its host was lost, or it failed).
	Redelivered bool
	// Timeout, if set, bounds this attempt instead of Spec.JobTimeout.
	Timeout time.Duration
	// Handle is the Source's own; the broker never looks at it.
	Handle any

	// lineSize is the size of its job message once queued behind a
	// running job (see session.pipeline).
	lineSize int
	// handoffs counts the processes the job could not be written to.
	handoffs int
}

// Outcome is how one attempt of a job ended.
type Outcome struct {
	// Result is the worker's result (JSON) when Err is empty.
	Result json.RawMessage
	// Err is non-empty when the attempt failed: the worker's error text, or
	// for a crash a description of the exit ("exit status 2", "signal: killed").
	Err string
	// Permanent is set when the worker asked that the job not be retried.
	Permanent bool
	// Crashed is set when the process exited (or was killed) holding the job.
	Crashed bool
	// OOMKilled is set, with Crashed, when the kernel's OOM killer killed
	// the process, as far as the pool can tell (Linux only): a SIGKILL it
	// did not send ended the process, and the host's count of OOM kills
	// rose while it ran. Err says so too: "signal: killed (out of memory:
	// the kernel's OOM killer)".
	OOMKilled bool
	// TimedOut is set when the attempt ran over its timeout: the worker was
	// sent the cancel op and, if it did not answer, stopped; or its answer
	// came after the deadline (see LateBy).
	TimedOut bool
	// LateBy is set, with TimedOut, when the worker answered the job after
	// its deadline (Started plus its timeout, on the pool's monotonic
	// clock): how long after. Such an answer does not count: the attempt
	// fails as timed out, Err quotes the worker's error if it gave one, and
	// a result is dropped. Zero for an answer in time (it wins, as any) and
	// for a worker that never answered.
	LateBy time.Duration
	// NotStarted is set when the job never reached a worker (its worker
	// went busy, or exited, or the pool stopped, first): the Source should
	// put it back for another worker without counting a failure. Err says
	// why.
	NotStarted bool
	// Index and PID name the worker process that ran the attempt.
	Index int
	PID   int
	// Started and Ended bracket the attempt.
	Started time.Time
	Ended   time.Time
}

// Source feeds jobs to a pool of channel-protocol workers. The pool calls
// Next once per idle worker, so a Source never needs to hold more jobs than
// there are idle workers; it calls Done exactly once for every job Next
// returned, including jobs whose worker crashed and jobs that never reached
// a worker because the pool stopped (Outcome.Crashed, Err says why).
type Source interface {
	// Next blocks until a job is available or ctx ends (then it returns
	// ctx's error). It is called concurrently, once per idle worker.
	Next(ctx context.Context) (*Job, error)
	// Done reports the end of a job's attempt. It must not block for long:
	// the worker that ran the job waits for it before taking the next.
	Done(job *Job, out Outcome)
}

// ReadySource is a Source that can also hand out a job it already holds
// without blocking. The pool tries TryNext first and calls Next only when it
// reports false, which saves a goroutine per job when jobs are waiting.
type ReadySource interface {
	Source
	// TryNext returns a job at once, or false if none is at hand. With
	// maxPayload >= 0 it returns only a job whose payload is at most that
	// many bytes, leaving a larger one for a later call.
	TryNext(maxPayload int) (*Job, bool)
}

// loadKey is the context key of WorkerLoad.
type loadKey struct{}

// WorkerLoad returns the load of the worker on whose behalf Source.Next
// was called: its resident memory in bytes, as last read (Pool.Workers
// reads it; a process never read is read then). A Source
// with several Next calls waiting may give a job to the least loaded
// worker (load-process-manager's dispatch by pressure).
func WorkerLoad(ctx context.Context) (rss int64, ok bool) {
	rss, ok = ctx.Value(loadKey{}).(int64)
	return rss, ok
}

// WithWorkerLoad returns ctx carrying rss as its worker's load, for
// WorkerLoad: the pool sets it on every Source.Next call.
func WithWorkerLoad(ctx context.Context, rss int64) context.Context {
	return context.WithValue(ctx, loadKey{}, rss)
}

// SourceFuncs is a Source made of two funcs, for tests and small programs.
type SourceFuncs struct {
	NextFunc func(ctx context.Context) (*Job, error)
	DoneFunc func(job *Job, out Outcome)
}

var _ Source = SourceFuncs{}

// Next calls NextFunc.
func (s SourceFuncs) Next(ctx context.Context) (*Job, error) { return s.NextFunc(ctx) }

// Done calls DoneFunc.
func (s SourceFuncs) Done(job *Job, out Outcome) { s.DoneFunc(job, out) }
