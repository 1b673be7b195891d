// A job for an idle worker: dispatch decides when the worker can take work,
// the pending Source.Next (its result comes back on session.next) and the
// write of the job on fd 3 (give, wrote). All of it runs on the session's
// goroutine (its slot's) but two helper goroutines, which touch none of the
// session's fields: the one calling Source.Next, with its own context, and
// the one writing a large job, which reports on session.writing. The
// session's loop takes both results and waits for them before it ends.

package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

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
	if fitsInline(j) {
		b, err := ss.appendJob(nil, j)
		if err == nil {
			err = ss.p.sendLines(b, string(proto.OpJob), inlineDeadline)
		}
		ss.wrote(err)
		return
	}
	if err := ss.p.in.SetWriteDeadline(time.Now().Add(ss.spec.ReadyTimeout)); err != nil {
		ss.wrote(err)
		return
	}
	ch := make(chan error, 1)
	ss.writing = ch
	w, m := ss.p.w, jobMessage(j)
	write := w.Write
	if ss.framed {
		write = w.WriteFramed
	}
	go func() { ch <- write(m) }()
}

// appendJob appends j's job message to b: framed for a worker that takes
// payloads framed, whose payload is then not looked at (docs/protocol.md,
// "Framed payloads"); else in the line, where it must be JSON.
func (ss *session) appendJob(b []byte, j *Job) ([]byte, error) {
	if ss.framed {
		return proto.AppendFramed(b, jobMessage(j))
	}
	return proto.Append(b, jobMessage(j))
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
		ss.writeAnswers() // held while the job was written
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
	ss.ready = false
	ss.setIdle()
	j.handoffs++
	if j.handoffs >= maxHandoffs {
		// A job no process takes is not carried for ever: it may be what
		// they cannot take. Its attempt fails, and the Source retries it
		// later (or not), so that it blocks no other job.
		ss.s.log.Warn("cannot give the job to the worker, the last of several; killing it, the job's attempt fails",
			"pid", ss.p.pid, "job", j.ID, "tries", j.handoffs, "err", err)
		out := ss.outcome()
		out.PID, out.Started = 0, time.Time{}
		out.Err = fmt.Sprintf("could not be handed to a worker in %d tries (last: %v)", j.handoffs, err)
		ss.s.pool.src.Done(j, out)
	} else {
		ss.s.log.Warn("cannot give the job to the worker; killing it, the job goes to its replacement",
			"pid", ss.p.pid, "job", j.ID, "err", err)
		ss.s.carry = j
	}
	select {
	case <-ss.p.exited:
	default:
		ss.p.kill()
	}
}

// maxHandoffs is how many processes in a row a job is written to, each
// killed when the write fails, before its attempt fails.
const maxHandoffs = 3

// fitsInline reports whether j's job message is small enough for give to
// write it on the session goroutine (see inlineWrite): its payload, id and
// type, with room for the envelope.
func fitsInline(j *Job) bool {
	return len(j.Payload)+len(j.ID)+len(j.Type) < inlineWrite-128
}

func jobMessage(j *Job) proto.Message {
	return proto.Message{Op: proto.OpJob, ID: j.ID, Type: j.Type, Payload: j.Payload, Attempt: j.Attempt, Redelivered: j.Redelivered}
}
