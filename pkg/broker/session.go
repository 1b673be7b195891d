// The session of one channel worker process: its type, its lifecycle and
// its main loop (run), the worker's messages (handle), and the settling of
// everything once the process has exited (finish). Every session function
// runs on its slot's goroutine and every field of session belongs to it;
// the rest of the session is in session_dispatch.go (a job for an idle
// worker), session_pipeline.go (the jobs queued into a busy worker),
// session_answers.go (done, and the outcomes given to Source.Done) and
// session_stop.go (timeouts, cancels and the stop of the process).

package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/conductor-run/conductor/internal/flow"
	"github.com/conductor-run/conductor/internal/proto"
)

// Timing of a session that is not in the Spec.
const (
	// sourceRetryDelay is the pause after Source.Next failed (other than by
	// its context ending) before the next call.
	sourceRetryDelay = time.Second
	// shutdownWriteTimeout bounds the write of the shutdown op: a worker
	// whose fd 3 is full is not reading, and fd 3 is closed right after.
	shutdownWriteTimeout = 100 * time.Millisecond
)

// session is the life of one channel worker process: it waits for ready,
// then loops Source.Next -> job on fd 3 -> done on fd 4 -> Source.Done,
// and stops the process when the pool stops. A worker whose ready op asks
// for a prefetch may also be written jobs while it runs one, while its jobs
// are short: it runs them in order (see queued). The session runs on its
// slot's goroutine and every field belongs to that goroutine; the helper
// goroutines (Source.Next, the job write) report back over channels and the
// session waits for them before it ends. It has no lifecycle of its own:
// it is the "wait" step of its slot's loop, and ends when its process has
// exited; the slot's ctx (stopC) and the pool's Kill (killC) only start
// that end.
type session struct {
	s    *slot
	p    *proc
	spec *Spec

	ready    bool      // the worker said ready, and not busy since
	full     bool      // it finished MaxJobs jobs: no more
	readyAt  time.Time // its first ready; zero if none
	finished int       // jobs the process finished (done received)
	job      *Job      // the job the worker runs (or is being written to it)
	jobStart time.Time // when job was given, or started after the one before it
	// queued are the jobs written to the worker behind job, in order; the
	// worker starts each when it has answered the one before it. Never
	// more than prefetch.
	queued   []*Job
	prefetch int          // jobs the worker may hold queued (its ready op's, capped)
	framed   bool         // the worker takes its jobs' payloads framed (its ready op's)
	avgRun   flow.Average // of the worker's run times, in nanoseconds

	next       chan nextResult // result of the pending Source.Next, or nil
	nextCtx    context.Context
	cancelNext context.CancelFunc
	writing    chan error // result of the pending job write, or nil

	msgs       <-chan workerLine // p.msgs, nil once it closed
	stopC      <-chan struct{}   // slot retired or pool stopping; nil once seen
	killC      <-chan struct{}   // pool killing; nil once seen
	stopping   bool
	shutdown   bool   // the shutdown op was sent (or fd 3 closed)
	killReason string // why we killed the process, if on purpose

	// replies brings Config.OnRequest's answers back, room for
	// maxRequests; inFlight counts the requests it has not answered;
	// answers are those encoded and not yet written (requests.go).
	replies  chan answered
	inFlight int
	answers  []byte
	// answersCut: the answers passed maxAnswerBytes, and the worker is
	// being replaced: nothing more is queued for it.
	answersCut  bool
	warnedNoReq bool // a request without a req number was logged
	warnedCount bool // a count op refused was logged
	// keeps is how many lookup answers the worker keeps (its ready op's
	// cache, at most maxKept); kept the keys it may keep, tracked the
	// gets in flight whose answers it may keep, by req (requests.go).
	keeps   int
	kept    map[lookupKey]*kept
	tracked map[uint64]asked

	violations     int       // protocol violations since the last logged
	violationLogAt time.Time // when one was last logged; zero if never

	jobTimer    alarm         // the running job's timeout
	cancelTimer alarm         // KillTimeout after the cancel op of a job over its timeout, then SIGTERM
	timedOut    time.Duration // the running job went over this timeout; zero if not
	cutReason   string        // why the running job is being cut short (timeout, cancel); "" if not
	// stoppedOnPurpose: the process was stopped because its job ran over
	// its timeout or was cancelled; its slot restarts it at once, as no
	// failure of its own.
	stoppedOnPurpose bool
	readyTimer       alarm // ReadyTimeout from start until the first ready
	drainTimer       alarm // StopTimeout for the in-flight job once stopping
	termTimer        alarm // KillTimeout after the shutdown op, then SIGTERM
	retryTimer       alarm // pause after a failed Source.Next
	eofTimer         alarm // KillTimeout after fd 4 closed, then SIGKILL: a worker without a channel is of no use
}

type nextResult struct {
	job *Job
	err error
}

func newSession(s *slot, p *proc) *session {
	ss := &session{
		s:       s,
		p:       p,
		spec:    &s.gen.spec,
		msgs:    p.msgs,
		replies: make(chan answered, maxRequests),
		kept:    make(map[lookupKey]*kept),
		tracked: make(map[uint64]asked),
		stopC:   s.ctx.Done(),
		killC:   s.pool.killing,
	}
	ss.readyTimer.set(ss.spec.ReadyTimeout)
	return ss
}

// run serves the process until it has exited, then settles its job. It
// returns the time of the worker's first ready, zero if it never said it.
func (ss *session) run() processRun {
	defer ss.finish()
	for {
		ss.dispatch()
		select {
		case m, ok := <-ss.msgs:
			if !ok {
				ss.msgs = nil
				ss.eofTimer.set(ss.spec.KillTimeout)
				continue
			}
			ss.handle(m)
		case r := <-ss.next:
			ss.gotNext(r)
		case a := <-ss.replies:
			ss.replied(a)
			ss.writeAnswers()
		case k := <-ss.s.changedC:
			ss.changed(k)
			ss.writeAnswers()
		case <-ss.s.lostC:
			ss.lost()
			ss.writeAnswers()
		case data := <-ss.s.messageC:
			ss.message(data)
			ss.writeAnswers()
		case err := <-ss.writing:
			ss.wrote(err)
		case <-ss.p.exited:
			return processRun{readyAt: ss.readyAt, finished: ss.finished, stoppedOnPurpose: ss.stoppedOnPurpose}
		case <-ss.stopC:
			ss.stopC = nil
			ss.beginStop()
		case <-ss.killC:
			ss.killC = nil
			ss.killReason = "pool killed"
			ss.p.kill()
		case <-ss.readyTimer.C():
			ss.readyTimer.stop()
			ss.s.log.Error("worker never said ready; killing it", "pid", ss.p.pid, "ready_timeout", ss.spec.ReadyTimeout)
			ss.p.kill()
		case <-ss.drainTimer.C():
			ss.drainTimer.stop()
			_, timeout := ss.s.stopping()
			ss.killReason = ss.s.stopCause()
			ss.s.log.Warn("job still running after the stop timeout; shutting the worker down", "pid", ss.p.pid, "stop_timeout", timeout)
			ss.sendShutdown()
		case <-ss.termTimer.C():
			ss.termTimer.stop()
			ss.killReason = ss.s.stopCause()
			ss.s.log.Warn("worker did not exit after shutdown; sending SIGTERM", "pid", ss.p.pid)
			ss.p.terminate()
		case <-ss.jobTimer.C():
			ss.jobTimer.stop()
			ss.overtime()
		case <-ss.cancelTimer.C():
			ss.cancelTimer.stop()
			ss.killReason, ss.stoppedOnPurpose = ss.cutReason, true
			ss.s.log.Warn("worker did not stop its job after the cancel op; sending SIGTERM", "pid", ss.p.pid, "job", ss.job.ID)
			ss.p.terminate()
		case id := <-ss.s.cancelC:
			ss.cancel(id)
		case <-ss.retryTimer.C():
			ss.retryTimer.stop()
		case <-ss.eofTimer.C():
			ss.eofTimer.stop()
			ss.s.log.Warn("worker closed fd 4 but did not exit; killing it", "pid", ss.p.pid)
			ss.p.kill()
		}
	}
}

// handle takes one line from the worker.
func (ss *session) handle(l workerLine) {
	if l.tooLong != nil {
		ss.tooLong(l.tooLong)
		if ss.stopping && ss.job == nil {
			ss.sendShutdown()
		}
		return
	}
	switch m := l.Message; m.Op {
	case proto.OpReady:
		ss.readyTimer.stop()
		if ss.job != nil {
			ss.s.log.Warn("worker said ready while holding a job; ignored", "pid", ss.p.pid, "job", ss.job.ID)
			return
		}
		if len(ss.queued) > 0 {
			// After busy, with jobs still queued: whether it runs them is
			// not known until it answers them.
			ss.s.log.Warn("worker said ready with jobs queued and unanswered; ignored", "pid", ss.p.pid, "queued", len(ss.queued))
			return
		}
		ss.ready = true
		ss.prefetch = min(max(m.Prefetch, 0), maxPrefetch)
		ss.framed = m.Framed
		ss.keeps = min(max(m.Cache, 0), maxKept)
		ss.s.takesMessages.Store(m.Messages)
		if ss.readyAt.IsZero() {
			ss.readyAt = time.Now()
			ss.s.markReady(ss.p.pid, true)
		}
		ss.setIdle()
	case proto.OpBusy:
		ss.s.log.Debug("worker said busy", "pid", ss.p.pid, "queued", len(ss.queued))
		ss.ready = false
		if ss.next != nil {
			ss.cancelNext() // a job it still returns is carried
		}
		if ss.job == nil && !ss.stopping {
			ss.s.setState(WorkerBusy)
		}
	case proto.OpDone:
		ss.done(m)
		if ss.stopping && ss.job == nil {
			ss.sendShutdown()
		}
	case proto.OpMessage:
		ss.s.pool.emit(Event{Kind: EventWorkerMessage, Index: ss.s.index, PID: ss.p.pid, Data: m.Data})
	case proto.OpLookup, proto.OpRequest:
		ss.request(m)
	case proto.OpCount:
		ss.count(m)
	default:
		ss.s.log.Warn("unknown op from worker; ignored", "pid", ss.p.pid, "op", m.Op)
	}
}

// setIdle shows the worker without a job.
func (ss *session) setIdle() {
	state := WorkerReady
	switch {
	case ss.stopping:
		state = WorkerStopping
	case ss.full:
		state = WorkerRecycling
	case !ss.ready:
		state = WorkerBusy
	}
	ss.s.update(func(w *Worker) { w.State, w.Job = state, "" })
}

// finish settles everything once the process has exited (its group is
// killed by then): the pending Next and job write, the messages still in
// fd 4 (a last done counts), and the job the worker held, reported Crashed.
func (ss *session) finish() {
	ss.s.takesMessages.Store(false)
	for _, a := range []*alarm{&ss.jobTimer, &ss.cancelTimer, &ss.readyTimer, &ss.drainTimer, &ss.termTimer, &ss.retryTimer, &ss.eofTimer} {
		a.stop()
	}
	if ss.next != nil {
		ss.cancelNext()
		ss.ready = false
		ss.gotNext(<-ss.next)
	}
	ss.drainMessages()
	ss.p.release(outputGrace)
	if ss.writing != nil {
		ss.wrote(<-ss.writing)
	}
	queued := ss.queued
	ss.setQueue(nil)
	for _, j := range queued {
		ss.notStarted(j, "its worker exited before starting it")
	}
	if ss.job == nil {
		return
	}
	j := ss.endJob()
	exit, oom := ss.p.ended()
	out := ss.outcome()
	out.Crashed, out.TimedOut, out.OOMKilled = true, ss.timedOut > 0, oom
	out.Err = "worker exited: " + exit
	if rss := ss.s.lastRSS.Load(); rss > 0 {
		out.Err += fmt.Sprintf("; rss %d MiB at its last check", (rss+1<<19)>>20)
	}
	if t := ss.p.stderr.last(crashTailLines, crashTailBytes); t != "" {
		out.Err += "; stderr: " + t
	}
	if ss.killReason != "" {
		out.Err = ss.killReason + " (" + out.Err + ")"
	}
	ss.s.log.Warn("job lost its worker", "pid", ss.p.pid, "job", j.ID, "attempt", j.Attempt, "err", out.Err)
	ss.s.pool.src.Done(j, out)
}

// drainMessages handles what the worker wrote before it exited, until fd 4
// ends or outputGrace passes: its answers, in time or over the limit.
func (ss *session) drainMessages() {
	t := time.NewTimer(outputGrace)
	defer t.Stop()
	for ss.msgs != nil {
		select {
		case m, ok := <-ss.msgs:
			if !ok {
				ss.msgs = nil
				break
			}
			switch {
			case m.tooLong != nil:
				ss.tooLong(m.tooLong)
			case m.Op == proto.OpDone:
				ss.done(m.Message)
			}
		case <-t.C:
			return
		}
	}
}
