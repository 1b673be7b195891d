// Cutting short: a job over its timeout or cancelled (the cancel op, then
// the cancelTimer), the graceful stop of the process (the shutdown op,
// then the termTimer), and alarm, the timers of the session's loop. It all
// runs on the session's goroutine; Pool.Cancel only sends a job id on
// slot.cancelC, which the loop takes.

package broker

import (
	"cmp"
	"fmt"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

// overtime starts the kill ladder of a job over its timeout: the cancel
// op now; SIGTERM to the process group if the job has not ended
// KillTimeout later; SIGKILL KillTimeout after that.
func (ss *session) overtime() {
	if ss.job == nil {
		return // it ended as the timer fired
	}
	ss.timedOut = cmp.Or(ss.job.Timeout, ss.spec.JobTimeout)
	ss.s.log.Warn("job over its timeout; cancelling it", "pid", ss.p.pid, "job", ss.job.ID, "timeout", ss.timedOut)
	ss.cutShort(fmt.Sprintf("job timed out after %s", ss.timedOut))
}

// cutShort tells the worker to stop its job (the cancel op) and, if it
// has not answered KillTimeout later, stops it (see the cancelTimer case).
func (ss *session) cutShort(why string) {
	ss.cutReason = why
	if ss.writing == nil {
		if err := ss.p.send(proto.Message{Op: proto.OpCancel, ID: ss.job.ID}, shutdownWriteTimeout); err != nil {
			ss.s.log.Warn("send the cancel op; the worker is stopped if the job does not end", "pid", ss.p.pid, "job", ss.job.ID, "err", err)
		}
	}
	ss.cancelTimer.set(ss.spec.KillTimeout)
}

// cancel cuts job id short if the worker holds it. A queued job is
// cancelled with the cancel op alone: the worker answers it without running
// it, or runs it if the op comes too late.
func (ss *session) cancel(id string) {
	switch {
	case ss.job != nil && ss.job.ID == id && ss.cutReason == "":
		ss.s.log.Info("job cancelled; telling its worker", "pid", ss.p.pid, "job", id)
		ss.cutShort("job cancelled")
	case ss.queuedAt(id) >= 0:
		ss.s.log.Info("queued job cancelled; telling its worker", "pid", ss.p.pid, "job", id)
		if err := ss.p.send(proto.Message{Op: proto.OpCancel, ID: id}, shutdownWriteTimeout); err != nil {
			ss.s.log.Warn("send the cancel op; the job runs", "pid", ss.p.pid, "job", id, "err", err)
		}
	}
}

// beginStop starts the graceful stop of the process: no new job; the one in
// flight gets StopTimeout.
func (ss *session) beginStop() {
	ss.stopping = true
	ss.s.setState(WorkerStopping)
	if ss.job == nil {
		ss.sendShutdown()
		return
	}
	_, timeout := ss.s.stopping()
	ss.drainTimer.set(timeout)
}

// sendShutdown asks the worker to exit: the shutdown op, then EOF on fd 3.
// It gets KillTimeout before SIGTERM. If a job write is still pending, the
// op is skipped: closing fd 3 ends that write and says the same.
func (ss *session) sendShutdown() {
	if ss.shutdown {
		return
	}
	ss.shutdown = true
	ss.drainTimer.stop()
	if ss.writing == nil {
		_ = ss.p.send(proto.Message{Op: proto.OpShutdown}, shutdownWriteTimeout)
	}
	ss.p.closeInput()
	ss.termTimer.set(ss.spec.KillTimeout)
}

// alarm is a timer that may be off; its channel is nil then, so a select
// case on it never fires.
type alarm struct{ t *time.Timer }

func (a *alarm) set(d time.Duration) {
	a.stop()
	a.t = time.NewTimer(d)
}

func (a *alarm) stop() {
	if a.t != nil {
		a.t.Stop()
		a.t = nil
	}
}

func (a *alarm) on() bool { return a.t != nil }

func (a *alarm) C() <-chan time.Time {
	if a.t == nil {
		return nil
	}
	return a.t.C
}
