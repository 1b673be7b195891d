// The worker's answers and what they make of its jobs: done for the
// running job, doneOutOfTurn for a queued one it answered before its turn,
// tooLong for an answer over the channel's limit, and the Outcome each job
// gets on Source.Done (notStarted, cannotSend, failAnswer).
// It all runs on the session's goroutine; the running job's done is the
// hot path, with the job write.

package broker

import (
	"cmp"
	"encoding/json"
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
	if timeout, late := ss.pastDeadline(j, out.Ended); timeout > 0 && (late >= 0 || ss.timedOut > 0) {
		ss.lateAnswer(j, &out, m, timeout, max(late, 0))
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

// pastDeadline returns the timeout of j, the running job, and how long
// after its deadline (its start plus its timeout) at is: negative while in
// time. Both times are read from the monotonic clock, so that a change of
// the wall clock moves no deadline. A zero timeout: j has no deadline.
func (ss *session) pastDeadline(j *Job, at time.Time) (timeout, late time.Duration) {
	timeout = cmp.Or(j.Timeout, ss.spec.JobTimeout)
	if timeout <= 0 {
		return 0, 0
	}
	return timeout, at.Sub(ss.jobStart) - timeout
}

// lateAnswer settles an answer that came after its job's deadline: in the
// grace after the cancel op, or racing the job's timer. The deadline
// holds: the attempt fails as timed out, whatever the worker said, and is
// retried like any timeout (not Permanent). The answer is recorded, not
// used: logged here, with LateBy and, for an error, its text in Err; a
// result is dropped. The worker answered, so it keeps serving.
func (ss *session) lateAnswer(j *Job, out *Outcome, m proto.Message, timeout, late time.Duration) {
	out.TimedOut, out.Permanent, out.LateBy, out.Result = true, false, late, nil
	if m.Error != "" {
		out.Err = fmt.Sprintf("job timed out after %s (%s)", timeout, m.Error)
	} else {
		out.Err = fmt.Sprintf("job timed out after %s (it answered %s after the deadline)", timeout, late.Round(time.Millisecond))
	}
	ss.s.log.Warn("worker answered after the job's deadline; the attempt fails as timed out",
		"pid", ss.p.pid, "job", j.ID, "attempt", j.Attempt, "timeout", timeout, "late_by", late,
		"answer_failed", m.Error != "", "result_bytes", len(m.Result))
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
	out := ss.outcome()
	out.Started, out.Err, out.Permanent = out.Ended, "job cannot be sent to a worker: "+err.Error(), true
	if !json.Valid(j.Payload) {
		// What a worker that reads its payloads in the line (not framed)
		// cannot take; a framed one gets it as it is.
		out.Err = "payload is not valid JSON"
	}
	ss.s.log.Error("job cannot be sent to a worker", "job", j.ID, "err", out.Err)
	ss.s.pool.src.Done(j, out)
}

// violationLogEvery spaces the log lines of one worker's protocol
// violations: the first is logged, then at most one per interval, with
// the count of those not logged.
const violationLogEvery = time.Minute

// tooLong settles a line of the worker over the channel's limit. Nothing of
// it is read but what its head tells (proto.LineTooLongError), which
// decides what it ends, so that no job waits for an answer that will not
// come:
//   - an answer (op done, or no op told) naming a job the worker holds
//     fails that job's attempt, and the worker goes on;
//   - a line of another op (ready, busy, message) is logged and skipped;
//   - an answer naming a job the worker does not hold is ignored, as such
//     a done is;
//   - an answer naming no job is a protocol violation (violation).
func (ss *session) tooLong(e *proto.LineTooLongError) {
	why := fmt.Sprintf("worker's line of %d bytes is over the limit of %d bytes (result too large?)", e.Size, e.Max)
	switch {
	case e.Op != "" && e.Op != proto.OpDone:
		ss.s.log.Warn("bad message from worker, ignored", "pid", ss.p.pid, "op", e.Op, "err", e)
	case e.ID == "":
		ss.violation(e, why)
	case ss.holds(e.ID):
		ss.s.log.Warn("worker answered a job with a line over the limit; its attempt fails", "pid", ss.p.pid, "job", e.ID, "err", e)
		ss.failAnswer(e.ID, why)
	default:
		ss.doneOutOfTurn(proto.Message{Op: proto.OpDone, ID: e.ID}) // logs that it does not hold it
	}
}

// violation settles an answer over the limit that names no job: if the
// worker holds one job, it was that one's, which fails; if it holds
// several, it cannot be told whose it was, and the worker is stopped: its
// running job fails with why (as a crash), the queued ones go back as not
// started.
func (ss *session) violation(e *proto.LineTooLongError, why string) {
	ss.violations++
	if now := time.Now(); ss.violationLogAt.IsZero() || now.Sub(ss.violationLogAt) >= violationLogEvery {
		ss.s.log.Warn("protocol violation: worker answered with a line over the limit that names no job",
			"pid", ss.p.pid, "err", e, "holding", ss.held(), "violations", ss.violations)
		ss.violationLogAt, ss.violations = now, 0
	}
	switch held := ss.held(); {
	case held == 1 && ss.job != nil:
		ss.failAnswer(ss.job.ID, why)
	case held == 1:
		ss.failAnswer(ss.queued[0].ID, why)
	case held > 1:
		ss.ready = false // no more jobs
		ss.killReason = why + "; it named no job, and its worker was stopped"
		select {
		case <-ss.p.exited:
		default:
			ss.p.terminate()
		}
	}
}

// holds reports whether the worker holds job id, running or queued.
func (ss *session) holds(id string) bool {
	return (ss.job != nil && ss.job.ID == id) || ss.queuedAt(id) >= 0
}

// held counts the jobs the worker holds, running and queued.
func (ss *session) held() int {
	n := len(ss.queued)
	if ss.job != nil {
		n++
	}
	return n
}

// failAnswer fails the attempt of job id, which the worker holds, with
// why: an answer that could not be read. A queued job answered so ran, or
// may have: its attempt counts, lest it come back for ever.
func (ss *session) failAnswer(id, why string) {
	if ss.job != nil && ss.job.ID == id {
		ss.done(proto.Message{Op: proto.OpDone, ID: id, Error: why})
		return
	}
	i := ss.queuedAt(id)
	j := ss.queued[i]
	ss.setQueue(slices.Delete(ss.queued, i, i+1))
	out := ss.outcome()
	out.Started, out.Err = out.Ended, why
	ss.countFinished()
	ss.s.pool.src.Done(j, out)
}
