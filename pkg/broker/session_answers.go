// The worker's answers and what they make of its jobs: done for the
// running job, doneOutOfTurn for a queued one it answered before its turn,
// and the Outcome each job gets on Source.Done (notStarted, cannotSend).
// It all runs on the session's goroutine; the running job's done is the
// hot path, with the job write.

package broker

import (
	"fmt"
	"slices"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

// endJob takes the job from the session, with its timers, and returns it.
func (ss *session) endJob() *Job {
	j := ss.job
	ss.job = nil
	ss.jobTimer.stop()
	ss.cancelTimer.stop()
	return j
}

// done reports the end of the worker's job.
func (ss *session) done(m proto.Message) {
	// The running job's answer first: it is almost every answer, and the
	// queue behind it may be long.
	if ss.job == nil || m.ID != ss.job.ID {
		ss.doneOutOfTurn(m)
		return
	}
	j := ss.endJob()
	out := ss.outcome()
	ss.avgRun.Add(int64(out.Ended.Sub(out.Started)))
	out.Result, out.Err, out.Permanent = m.Result, m.Error, m.Permanent
	if ss.timedOut > 0 && m.Error != "" {
		// Cancelled for its timeout: retry it, whatever the worker thought.
		out.Err = fmt.Sprintf("job timed out after %s (%s)", ss.timedOut, m.Error)
		out.TimedOut, out.Permanent = true, false
	}
	ss.countFinished()
	if len(ss.queued) > 0 && ss.ready && !ss.shutdown {
		// The worker starts the next job as it answers this one. After
		// busy or shutdown it may not (the Go SDK leaves its queue): the
		// queued jobs then count as not started until answered.
		next := ss.queued[0]
		ss.setQueue(slices.Delete(ss.queued, 0, 1))
		ss.start(next)
	} else {
		ss.setIdle()
	}
	ss.s.pool.src.Done(j, out)
}

// doneOutOfTurn takes an answer for a job that is not the running one.
func (ss *session) doneOutOfTurn(m proto.Message) {
	if i := ss.queuedAt(m.ID); i >= 0 {
		// Answered before its turn: a queued job the worker refused or
		// whose cancel it took, so it never ran, and goes back as not
		// started (a cancelled one ends as such when it is next taken).
		// A success is a job the worker ran after all: after busy or
		// shutdown, workerd no longer counts the queue as running.
		j := ss.queued[i]
		ss.setQueue(slices.Delete(ss.queued, i, i+1))
		if m.Error != "" {
			ss.notStarted(j, "answered before it started: "+m.Error)
			return
		}
		out := ss.outcome()
		out.Started, out.Result = out.Ended, m.Result
		ss.countFinished()
		ss.s.pool.src.Done(j, out)
		return
	}
	held := ""
	if ss.job != nil {
		held = ss.job.ID
	}
	ss.s.log.Warn("worker reported done for a job it does not hold; ignored", "pid", ss.p.pid, "job", m.ID, "holding", held)
}

// countFinished counts a job the worker ran to its end, and asks for the
// worker's replacement once it has run max_jobs.
func (ss *session) countFinished() {
	ss.finished++
	ss.s.update(func(w *Worker) { w.JobsDone++ })
	if max := ss.spec.MaxJobs; max > 0 && ss.finished >= max && !ss.full {
		ss.full = true // no more jobs: it waits for its replacement
		ss.s.requestRecycle()
	}
}

func (ss *session) outcome() Outcome {
	return Outcome{Index: ss.s.index, PID: ss.p.pid, Started: ss.jobStart, Ended: time.Now()}
}

// notStarted gives j back to the Source as a job no worker started.
func (ss *session) notStarted(j *Job, why string) {
	out := ss.outcome()
	out.Started, out.NotStarted, out.Err = out.Ended, true, why
	ss.s.pool.src.Done(j, out)
}

// cannotSend ends a job that cannot be encoded for the channel: nothing was
// written, and no worker could take it.
func (ss *session) cannotSend(j *Job, err error) {
	ss.s.log.Error("job cannot be sent to a worker", "job", j.ID, "err", err)
	out := ss.outcome()
	out.Started, out.Err, out.Permanent = out.Ended, "job cannot be sent to a worker: "+err.Error(), true
	ss.s.pool.src.Done(j, out)
}
