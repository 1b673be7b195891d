package worker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/flow"
	"github.com/conductor-run/conductor/internal/proto"
)

// server is one Run. Three goroutines share it:
//
//   - the runner (the goroutine that called Run) runs the jobs, one after
//     the other, in the order they came: jobs queued behind the running one
//     run with no hand-off between goroutines, which is what lets a worker
//     take thousands of short jobs a second for little CPU;
//   - the reader takes workerd's messages as they come: it queues jobs (or
//     refuses them), and acts at once on a cancel or a shutdown, and on the
//     end of the channel;
//   - the watcher acts on Run's stop signals, and writes the answers the
//     runner holds back (see next) once they have waited holdMax.
//
// The state below mu is theirs in common. Answers are encoded into pending
// and written in one write by flush, by whichever goroutine has them.
type server struct {
	h        Handler
	log      *slog.Logger
	base     context.Context // parent of handler contexts: Run's ctx, not its cancellation
	prefetch int             // jobs workerd may queue behind the running one
	lateWait time.Duration   // lateJobWait; tests lengthen it

	wmu   sync.Mutex // held across taking pending and writing it, so answers keep their order
	out   *proto.Writer
	ended bool // guarded by wmu: Run has returned; write nothing more

	wake chan struct{} // -> runner, waiting in next: there may be something to do
	held chan struct{} // runner -> watcher: answers are held back

	mu       sync.Mutex
	job      *Job                    // the running job (see startHeadLocked); nil between jobs
	ctx      context.Context         // job's context
	cancel   context.CancelCauseFunc // cancels ctx
	queue    []proto.Message         // jobs to run next, in order
	pending  []byte                  // messages encoded and not yet written
	pendOp   proto.Op                // the first one's op, to name them in an error
	idle     bool                    // the runner waits on wake
	armed    bool                    // the watcher will flush held answers within holdMax
	draining bool                    // take no job; return once the running one is reported
	shutdown bool                    // workerd sent the shutdown op
	lateMay  bool                    // after our own stop while idle, the job workerd counts as running may still come (see acceptLocked)
	err      error                   // ends the run: the channel closed or failed
	avgRun   flow.Average            // of handler run times, in nanoseconds (the runner's)
}

// holdMax bounds how long the runner holds answers back while it runs the
// jobs queued behind them.
const holdMax = time.Millisecond

// holdUnder is the average handler run time under which the runner holds
// answers back while it runs the next queued job, to write them together.
const holdUnder = 50 * time.Microsecond

func newServer(ctx context.Context, h Handler, out io.Writer, log *slog.Logger, prefetch int) *server {
	return &server{
		h:        h,
		log:      log,
		prefetch: prefetch,
		lateWait: lateJobWait,
		out:      proto.NewWriter(out),
		base:     context.WithoutCancel(ctx),
		wake:     make(chan struct{}, 1),
		held:     make(chan struct{}, 1),
	}
}

// read turns workerd's lines into the server's state until reading fails.
// Bad lines are logged and skipped.
func (s *server) read(r *proto.Reader) {
	for {
		m, err := r.Read()
		if _, bad := errors.AsType[*proto.SyntaxError](err); bad || errors.Is(err, proto.ErrLineTooLong) {
			s.log.Warn("worker: ignoring a bad line from workerd", "err", err)
		} else if err != nil {
			s.readFailed(err)
			return
		} else if s.handle(m) {
			s.flush()
		}
		if !r.LineReady() {
			// The jobs of this read are queued: the runner, if it waits,
			// takes them now, on this thread once the reader blocks. Woken
			// at the first job, it would start on another thread, only to
			// wait for the lock while the reader queues the rest.
			s.mu.Lock()
			s.wakeLocked()
			s.mu.Unlock()
		}
	}
}

// readFailed ends the run on a read error, or on the end of the channel
// unless workerd sent shutdown first: then the running job still finishes.
func (s *server) readFailed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case errors.Is(err, io.EOF) && s.shutdown:
		return
	case errors.Is(err, io.EOF):
		err = ErrChannelClosed
	default:
		err = fmt.Errorf("worker: read channel: %w", err)
	}
	s.failLocked(err)
}

// failLocked ends the run with err, unless it has ended already: the
// running handler is cancelled with err as the cause.
func (s *server) failLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	if s.job != nil {
		s.cancel(err)
	}
	s.wakeLocked()
}

// wakeLocked wakes the runner if it waits.
func (s *server) wakeLocked() {
	if s.idle {
		s.idle = false
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// handle acts on one message from workerd. It reports whether it made an
// answer to write.
func (s *server) handle(m proto.Message) (answered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m.Op {
	case proto.OpJob:
		return s.acceptLocked(m)
	case proto.OpCancel:
		if i := slices.IndexFunc(s.queue, func(q proto.Message) bool { return q.ID == m.ID }); i >= 0 {
			s.queue = slices.Delete(s.queue, i, i+1)
			s.answerLocked(proto.Message{Op: proto.OpDone, ID: m.ID, Error: errCancelled.Error()})
			return true
		}
		if s.job == nil || s.job.ID != m.ID {
			s.log.Warn("worker: ignoring cancel of a job that is not running", "job", m.ID)
			return false
		}
		s.cancel(errCancelled)
	case proto.OpShutdown:
		s.draining, s.shutdown, s.lateMay = true, true, false
		s.wakeLocked()
	default:
		s.log.Warn("worker: ignoring unknown op from workerd", "op", m.Op)
	}
	return false
}

// acceptLocked queues the job of m to run next if the worker is free to run
// it, or behind the running one, up to the prefetch. workerd sends no more
// than that; any other job is refused with a retryable error, so that it is
// not lost.
func (s *server) acceptLocked(m proto.Message) (answered bool) {
	if m.ID == "" {
		s.log.Warn("worker: ignoring a job without an id", "type", m.Type)
		return false
	}
	var refusal string
	// A job queued while the worker has none is as good as running.
	ahead := len(s.queue)
	if s.job != nil {
		ahead++
	}
	switch {
	case s.lateMay && s.job == nil && len(s.queue) == 0:
		// The first job to come after a stop of the worker's own that
		// found it idle was sent before workerd read busy: workerd counts
		// it as running, and a refusal would cost it an attempt. It runs.
		s.lateMay = false
		s.queue = append(s.queue, m)
		s.startHeadLocked()
		return false
	case s.draining:
		refusal = "worker: shutting down"
	case ahead > s.prefetch:
		var busy string
		if s.job != nil {
			busy = s.job.ID
		} else {
			busy = s.queue[0].ID
		}
		refusal = "worker: busy with job " + busy
	default:
		s.queue = append(s.queue, m) // read wakes the runner
		return false
	}
	s.log.Warn("worker: refusing a job", "job", m.ID, "err", refusal)
	s.answerLocked(proto.Message{Op: proto.OpDone, ID: m.ID, Error: refusal})
	return true
}

// watch acts on the stop signals until done is closed, and flushes answers
// the runner held back for longer than holdMax.
func (s *server) watch(stop, hard, done <-chan struct{}) {
	t := time.NewTimer(holdMax)
	t.Stop()
	for {
		select {
		case <-done:
			t.Stop()
			return
		case <-stop:
			stop = nil
			s.stop(nil)
		case <-hard:
			stop, hard = nil, nil
			s.stop(errHardStop)
		case <-s.held:
			t.Reset(holdMax)
		case <-t.C:
			s.mu.Lock()
			s.armed = false
			s.mu.Unlock()
			s.flush()
		}
	}
}

// stop starts a stop that workerd did not ask for: it tells workerd that no
// job should come, and cancels the running handler with cause, if not nil.
// A job queued while no job runs is the one workerd counts as running: it
// runs all the same (its context cancelled on a hard stop), so that its
// answer comes before the worker exits; the rest of the queue is left.
func (s *server) stop(cause error) {
	s.mu.Lock()
	if s.job == nil && len(s.queue) > 0 && !s.draining && s.err == nil {
		s.startHeadLocked()
	}
	if s.job != nil && cause != nil {
		s.cancel(cause)
	}
	if cause != nil {
		s.lateMay = false // a hard stop takes no job
	}
	if s.draining {
		s.mu.Unlock()
		return
	}
	s.draining = true
	s.lateMay = cause == nil && s.job == nil && s.err == nil
	s.answerLocked(proto.Message{Op: proto.OpBusy})
	s.wakeLocked()
	s.mu.Unlock()
	s.flush()
}

// serve runs jobs until a stop completes (nil) or the channel fails. ready
// is sent already.
func (s *server) serve() error {
	for {
		ctx, job, ok := s.next()
		if !ok {
			s.flush()
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.err
		}
		s.finish(s.call(ctx, job))
	}
}

// next returns the running job and its context, starting the job at the
// head of the queue if none runs; false when the run is over. Before it
// waits for a job, it writes the answers held back; it holds them back
// still while the job to run is likely to end at once.
func (s *server) next() (ctx context.Context, job *Job, ok bool) {
	for {
		s.mu.Lock()
		if s.err != nil {
			if s.job != nil { // started by finish or stop; its context is cancelled
				s.cancel(s.err)
				s.job, s.ctx, s.cancel = nil, nil, nil
			}
			s.mu.Unlock()
			return nil, nil, false
		}
		if s.job == nil && len(s.queue) > 0 && !s.draining {
			s.startHeadLocked()
		}
		if s.job != nil {
			ctx, job = s.ctx, s.job
			hold := len(s.pending) > 0 && s.avgRun.Duration() > 0 && s.avgRun.Duration() < holdUnder
			if hold && !s.armed {
				s.armed = true
				s.held <- struct{}{} // cannot block: armed is set until the watcher takes it
			}
			s.mu.Unlock()
			if !hold {
				s.flush()
			}
			return ctx, job, true
		}
		if s.draining && !s.lateMay {
			s.mu.Unlock()
			return nil, nil, false
		}
		s.idle = true
		draining := s.draining
		s.mu.Unlock()
		s.flush()
		if !draining {
			<-s.wake
			continue
		}
		// Stopped by ourselves while idle: a job workerd wrote before it
		// read busy may be on its way, and workerd counts it as running.
		// Wait a little for it (see acceptLocked).
		t := time.NewTimer(s.lateWait)
		select {
		case <-s.wake:
		case <-t.C:
			s.mu.Lock()
			s.lateMay = false
			s.mu.Unlock()
		}
		t.Stop()
	}
}

// lateJobWait is how long a worker that stopped of its own accord while
// idle waits for a job workerd wrote before it read busy.
const lateJobWait = 50 * time.Millisecond

// startHeadLocked makes the job at the head of the queue the running one,
// with its context. It is called as soon as the job before it is answered
// (finish), when the runner looks for work (next), and by a stop (stop):
// from the moment workerd reads an answer while the worker is ready, it
// counts the next queued job as running, and a stop must not leave that
// job unanswered.
func (s *server) startHeadLocked() {
	m := s.queue[0]
	s.queue = slices.Delete(s.queue, 0, 1)
	s.job = &Job{ID: m.ID, Type: m.Type, Payload: m.Payload, Attempt: m.Attempt}
	s.ctx, s.cancel = context.WithCancelCause(s.base)
}

// call runs the handler on job, recovering a panic, and encodes its
// result.
func (s *server) call(ctx context.Context, job *Job) (o outcome) {
	o.id = job.ID
	start := time.Now()
	defer func() {
		o.took = time.Since(start)
		if v := recover(); v != nil {
			s.log.Error("worker: handler panicked", "job", job.ID, "panic", v, "stack", string(debug.Stack()))
			o.result, o.err = nil, fmt.Errorf("panic: %v", v)
		}
	}()
	v, err := s.h(ctx, job)
	if err != nil {
		o.err = err
		return o
	}
	b, err := json.Marshal(v)
	switch {
	case err != nil:
		o.err = Permanent(fmt.Errorf("encode result: %w", err))
	case string(b) != "null":
		o.result = b
	}
	return o
}

// outcome is how a handler call ended: an encoded result or an error.
type outcome struct {
	id     string
	result json.RawMessage
	err    error
	took   time.Duration // the handler's run time
}

// finish reports the outcome of the running job, unless the run has
// failed: then there is no one to report it to; and starts the next queued
// job in the same step, so that a stop cannot fall between the two (see
// startHeadLocked). When the worker stops, the jobs still queued are left
// unanswered: workerd gives them to another worker when this one exits,
// as jobs that never started.
func (s *server) finish(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel(nil) // the handler has returned: release its context
	s.job, s.ctx, s.cancel = nil, nil, nil
	s.avgRun.Add(int64(o.took))
	if s.err != nil {
		return
	}
	m := proto.Message{Op: proto.OpDone, ID: o.id, Result: o.result}
	if o.err != nil {
		m.Error = cmp.Or(o.err.Error(), fmt.Sprintf("%T with an empty message", o.err))
		m.Permanent = IsPermanent(o.err)
	}
	s.answerLocked(m)
	if len(s.queue) > 0 && !s.draining && s.err == nil {
		s.startHeadLocked()
	}
}

// send writes m now, after the messages still pending, and returns the
// error that ended the run, if any.
func (s *server) send(m proto.Message) error {
	s.mu.Lock()
	s.answerLocked(m)
	s.mu.Unlock()
	s.flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// answerLocked encodes m for the next flush. A message that cannot be
// encoded ends the run: the channel's messages are all plain.
func (s *server) answerLocked(m proto.Message) {
	b, err := proto.Append(s.pending, m)
	if err != nil {
		s.failLocked(fmt.Errorf("worker: %w", err))
		return
	}
	if len(s.pending) == 0 {
		s.pendOp = m.Op
	}
	s.pending = b
}

// flush writes the pending messages, in one write. A write that fails ends
// the run.
func (s *server) flush() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	lines, op := s.pending, s.pendOp
	s.pending = nil
	s.mu.Unlock()
	if len(lines) == 0 || s.ended {
		return
	}
	what := string(op)
	if bytes.Count(lines, []byte{'\n'}) > 1 {
		what += " and more"
	}
	err := s.out.WriteLines(lines, what)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failLocked(fmt.Errorf("worker: %w", err))
		return
	}
	if s.pending == nil {
		s.pending = lines[:0] // reuse the buffer
	}
}

// end makes every later flush write nothing: Run is closing the channel.
func (s *server) end() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ended = true
}
