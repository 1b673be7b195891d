package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
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
	// maxPrefetch caps the jobs a worker may hold queued behind its running
	// one (the prefetch of its ready op): a queue refilled once half gone
	// carries 32 jobs a write, and the worker reads as many a wake-up.
	maxPrefetch = 64
	// maxQueuedBytes bounds the job messages queued in a worker, as they
	// are written: no job is queued once they reach it, so they stay under
	// maxQueuedBytes+inlineWrite, and with the running job's (under
	// inlineWrite if it was written inline) inside a pipe's 64 KiB, so
	// writing to a busy worker does not block.
	maxQueuedBytes = 32 << 10
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
	avgRun   flow.Average // of the worker's run times, in nanoseconds

	next       chan nextResult // result of the pending Source.Next, or nil
	nextCtx    context.Context
	cancelNext context.CancelFunc
	writing    chan error // result of the pending job write, or nil

	msgs       <-chan proto.Message // p.msgs, nil once it closed
	stopC      <-chan struct{}      // slot retired or pool stopping; nil once seen
	killC      <-chan struct{}      // pool killing; nil once seen
	stopping   bool
	shutdown   bool   // the shutdown op was sent (or fd 3 closed)
	killReason string // why we killed the process, if on purpose

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
		s:     s,
		p:     p,
		spec:  &s.gen.spec,
		msgs:  p.msgs,
		stopC: s.ctx.Done(),
		killC: s.pool.killing,
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

// dispatch gives the worker work when it can take some: the carried job,
// or a new one from the Source, and behind a running job the jobs the
// Source holds (pipeline). The session's loop calls it after every event;
// a job given here is followed by its queue at once, since the next event
// may be that job's done: a worker whose queue ran dry would otherwise go
// on taking one job at a time.
func (ss *session) dispatch() {
	if ss.stopping || ss.full || !ss.ready || ss.next != nil || ss.writing != nil || ss.retryTimer.on() {
		return
	}
	if ss.job != nil {
		ss.pipeline()
		return
	}
	if j := ss.s.carry; j != nil {
		ss.s.carry = nil
		ss.give(j)
		ss.dispatch() // the jobs at hand go behind it now, not after its done
		return
	}
	src := ss.s.pool.src
	if rs, ok := src.(ReadySource); ok {
		if j, ok := rs.TryNext(-1); ok {
			ss.give(j)
			ss.dispatch()
			return
		}
	}
	ctx, cancel := context.WithCancel(WithWorkerLoad(ss.s.ctx, ss.s.rss(ss.p.pid)))
	ch := make(chan nextResult, 1)
	ss.next, ss.nextCtx, ss.cancelNext = ch, ctx, cancel
	go func() {
		j, err := src.Next(ctx)
		ch <- nextResult{job: j, err: err}
	}()
}

// pipeline queues jobs the Source holds already behind the running one,
// while the worker's jobs are short: up to its prefetch, and no more than it
// runs in about flow.ShortJob, in one write once half the queue is gone. It
// never waits on the Source: a job that has to be fetched goes to an idle
// worker first.
func (ss *session) pipeline() {
	rs, ok := ss.s.pool.src.(ReadySource)
	limit := flow.Queue(ss.prefetch, ss.avgRun.Duration())
	if !ok || limit == 0 {
		return
	}
	// The queue holds what the worker runs in about flow.ShortJob (flow.Queue), within its
	// prefetch, and is refilled once half gone, so that one write and one
	// read carry several jobs.
	queuedBytes := 0
	for _, j := range ss.queued {
		queuedBytes += j.lineSize
	}
	if len(ss.queued) > limit/2 || queuedBytes > maxQueuedBytes/2 {
		return
	}
	room := limit - len(ss.queued)
	if max := ss.spec.MaxJobs; max > 0 {
		room = min(room, max-ss.finished-1-len(ss.queued)) // the worker will not run more
	}
	var lines []byte
	first := len(ss.queued)
	for range room {
		// Only small jobs are queued, and none once the queue holds
		// maxQueuedBytes, so that the write never blocks on a full pipe; a
		// larger one is left for an idle worker.
		if queuedBytes >= maxQueuedBytes {
			break
		}
		j, ok := rs.TryNext(min(maxQueuedPayload, maxQueuedBytes-queuedBytes))
		if !ok {
			break
		}
		before := len(lines)
		var err error
		if lines, err = proto.Append(lines, jobMessage(j)); err != nil {
			ss.cannotSend(j, err)
			continue
		}
		if j.lineSize = len(lines) - before; j.lineSize >= inlineWrite {
			// A small payload whose message is not (a long id or type,
			// or characters JSON escapes): back to the Source for an
			// idle worker, as never started.
			lines = lines[:before]
			ss.notStarted(j, "too large to queue behind a running job")
			continue
		}
		ss.queued = append(ss.queued, j)
		queuedBytes += j.lineSize
	}
	if len(lines) == 0 {
		return
	}
	ss.setQueue(ss.queued)
	err := ss.p.sendLines(lines, "queued jobs", inlineDeadline)
	if err == nil {
		return
	}
	// The worker, of no use if it does not read, is killed; the jobs of
	// the failed write go back to the Source as never started, whether or
	// not some reached it: a worker starts a queued job only after
	// answering the one before it.
	failed := ss.queued[first:]
	ss.setQueue(ss.queued[:first:first])
	ss.ready = false
	for _, j := range failed {
		ss.notStarted(j, "could not be written to its worker")
	}
	select {
	case <-ss.p.exited:
	default:
		ss.s.log.Warn("cannot give queued jobs to the worker; killing it, the jobs go to other workers",
			"pid", ss.p.pid, "jobs", len(failed), "err", err)
		ss.p.kill()
	}
}

// setQueue makes q the jobs queued in the worker, and shows them.
func (ss *session) setQueue(q []*Job) {
	ss.queued = q
	ss.s.setQueued(q)
}

// fitsInline reports whether j's job message is small enough for give to
// write it on the session goroutine (see inlineWrite): its payload, id and
// type, with room for the envelope.
func fitsInline(j *Job) bool {
	return len(j.Payload)+len(j.ID)+len(j.Type) < inlineWrite-128
}

// maxQueuedPayload bounds the payload of a job queued behind a running
// one: with its envelope it stays under inlineWrite.
const maxQueuedPayload = inlineWrite - 512

// notStarted gives j back to the Source as a job no worker started.
func (ss *session) notStarted(j *Job, why string) {
	out := ss.outcome()
	out.Started, out.NotStarted, out.Err = out.Ended, true, why
	ss.s.pool.src.Done(j, out)
}

func jobMessage(j *Job) proto.Message {
	return proto.Message{Op: proto.OpJob, ID: j.ID, Type: j.Type, Payload: j.Payload, Attempt: j.Attempt}
}

// cannotSend ends a job that cannot be encoded for the channel: nothing was
// written, and no worker could take it.
func (ss *session) cannotSend(j *Job, err error) {
	ss.s.log.Error("job cannot be sent to a worker", "job", j.ID, "err", err)
	out := ss.outcome()
	out.Started, out.Err, out.Permanent = out.Ended, "job cannot be sent to a worker: "+err.Error(), true
	ss.s.pool.src.Done(j, out)
}

// gotNext takes the result of Source.Next.
func (ss *session) gotNext(r nextResult) {
	canceled := ss.nextCtx.Err() != nil
	ss.next = nil
	ss.cancelNext()
	switch {
	case r.job != nil && (!ss.ready || ss.full) && !ss.stopping && !ss.shutdown:
		// The worker went busy while the job was on its way: give the job
		// to another worker rather than wait for this one.
		ss.s.carry = r.job
		ss.s.giveBack("worker busy")
	case r.job != nil && (ss.stopping || !ss.ready || ss.shutdown):
		ss.s.carry = r.job // the worker can no longer take it
	case r.job != nil:
		ss.give(r.job)
	case canceled:
		// We asked for it: busy, stop or exit.
	default:
		ss.s.log.Error("job source failed", "err", r.err)
		ss.retryTimer.set(sourceRetryDelay)
	}
}

// inlineWrite bounds the job messages that give writes itself. The worker
// has read every message before the job (it answered done), so the pipe is
// empty and such a write completes at once; inlineDeadline only guards
// against a worker that stopped reading its channel.
const (
	inlineWrite    = 4 << 10
	inlineDeadline = time.Second
)

// give writes job to the idle worker as its running job. A large job is
// written from a helper goroutine so that the session keeps serving events
// while a wedged worker does not read. The write fails after ReadyTimeout,
// or at once once the process is gone.
func (ss *session) give(j *Job) {
	ss.start(j)
	m := jobMessage(j)
	if fitsInline(j) {
		ss.wrote(ss.p.send(m, inlineDeadline))
		return
	}
	if err := ss.p.in.SetWriteDeadline(time.Now().Add(ss.spec.ReadyTimeout)); err != nil {
		ss.wrote(err)
		return
	}
	ch := make(chan error, 1)
	ss.writing = ch
	w := ss.p.w
	go func() { ch <- w.Write(m) }()
}

// start makes j the worker's running job, with its timeout.
func (ss *session) start(j *Job) {
	ss.job, ss.jobStart, ss.timedOut, ss.cutReason = j, time.Now(), 0, ""
	if t := cmp.Or(j.Timeout, ss.spec.JobTimeout); t > 0 {
		ss.jobTimer.set(t)
	}
	ss.s.update(func(w *Worker) { w.State, w.Job = WorkerBusy, j.ID })
}

// wrote takes the result of the job write. A job that could not be written
// never reached the worker: it stays with the slot for the next process,
// and this one, of no use, is killed.
func (ss *session) wrote(err error) {
	ss.writing = nil
	if err == nil || ss.job == nil {
		return
	}
	j := ss.endJob()
	if errors.Is(err, proto.ErrEncode) {
		// Nothing was written and the worker is fine: the job itself
		// cannot be sent, to this worker or any other.
		ss.setIdle()
		ss.cannotSend(j, err)
		return
	}
	ss.s.carry = j
	ss.ready = false
	ss.setIdle()
	select {
	case <-ss.p.exited:
	default:
		ss.s.log.Warn("cannot give the job to the worker; killing it, the job goes to its replacement",
			"pid", ss.p.pid, "job", j.ID, "err", err)
		ss.p.kill()
	}
}

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

// queuedAt is the index of job id in queued, or -1.
func (ss *session) queuedAt(id string) int {
	return slices.IndexFunc(ss.queued, func(j *Job) bool { return j.ID == id })
}

// handle takes one message from the worker.
func (ss *session) handle(m proto.Message) {
	switch m.Op {
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
	default:
		ss.s.log.Warn("unknown op from worker; ignored", "pid", ss.p.pid, "op", m.Op)
	}
}

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

// finish settles everything once the process has exited (its group is
// killed by then): the pending Next and job write, the messages still in
// fd 4 (a last done counts), and the job the worker held, reported Crashed.
func (ss *session) finish() {
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
// ends or outputGrace passes.
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
			if m.Op == proto.OpDone {
				ss.done(m)
			}
		case <-t.C:
			return
		}
	}
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
