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
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

// server is one Run: the loop that owns the worker's state, fed by a reader
// goroutine (workerd's messages) and by the goroutine of the running handler.
type server struct {
	h    Handler
	log  *slog.Logger
	out  *proto.Writer
	base context.Context // parent of handler contexts: Run's ctx, not its cancellation

	inbox    chan inbound // reader goroutine -> serve; buffered, so a read of many lines is one hand-off
	finished chan outcome // handler goroutine -> serve; one job at a time
	prefetch int          // jobs workerd may queue behind the running one

	// Owned by the serve goroutine.
	job      *Job                    // the running job; nil when idle
	cancel   context.CancelCauseFunc // cancels job's context
	queue    []proto.Message         // jobs received while job runs, to run next in order
	pending  []byte                  // messages encoded and not yet written (see serve)
	pendOp   proto.Op                // the first one's op, to name them in an error
	avgRun   time.Duration           // moving average of handler run times; 0: none yet
	draining bool                    // take no job; return once idle
	shutdown bool                    // workerd sent the shutdown op
}

// inbound is a message from workerd, or the error that ended the reading.
type inbound struct {
	msg proto.Message
	err error
}

// outcome is how a handler call ended: an encoded result or an error.
type outcome struct {
	id     string
	result json.RawMessage
	err    error
	took   time.Duration // the handler's run time
}

func newServer(ctx context.Context, h Handler, out io.Writer, log *slog.Logger, prefetch int) *server {
	return &server{
		h:        h,
		log:      log,
		prefetch: prefetch,
		out:      proto.NewWriter(out),
		base:     context.WithoutCancel(ctx),
		inbox:    make(chan inbound, 64),
		finished: make(chan outcome, 1),
	}
}

// read turns workerd's lines into inbound events until the reader fails or
// quit is closed. Bad lines are logged and skipped.
func (s *server) read(r *proto.Reader, quit <-chan struct{}) {
	for {
		m, err := r.Read()
		if _, bad := errors.AsType[*proto.SyntaxError](err); bad || errors.Is(err, proto.ErrLineTooLong) {
			s.log.Warn("worker: ignoring a bad line from workerd", "err", err)
			continue
		}
		select {
		case s.inbox <- inbound{msg: m, err: err}:
		case <-quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// serve sends ready, then handles events until a stop completes (nil) or the
// channel fails. It returns with no handler running.
func (s *server) serve(stop, hard <-chan struct{}) error {
	if err := s.send(proto.Message{Op: proto.OpReady, Prefetch: s.prefetch}); err != nil {
		return err
	}
	for !s.draining || s.job != nil {
		var err error
		if len(s.pending) > 0 {
			// Answers wait while there is more to do at once: a job of the
			// queue that ends within a yield, while jobs take a few
			// microseconds (a longer one could hold the yield up), or a
			// message already read. Then they go in one write, before the
			// loop waits.
			if s.job != nil && s.avgRun < yieldUnder {
				runtime.Gosched()
			}
			select {
			case in := <-s.inbox:
				err = s.handle(in)
			case o := <-s.finished:
				err = s.finish(o)
			default:
				err = s.flush()
			}
			if err != nil {
				return s.fail(err)
			}
			continue
		}
		select {
		case <-stop:
			stop = nil
			err = s.stop(nil)
		case <-hard:
			stop, hard = nil, nil
			err = s.stop(errHardStop)
		case in := <-s.inbox:
			err = s.handle(in)
		case o := <-s.finished:
			err = s.finish(o)
		}
		if err != nil {
			return s.fail(err)
		}
	}
	return s.flush()
}

// fail ends serve with err: the answers already made are written if they
// can be, and the running handler is abandoned.
func (s *server) fail(err error) error {
	_ = s.flush()
	s.abandon(err)
	return err
}

// yieldUnder is the average handler run time under which the serve loop
// yields to the next queued job before it writes the answers it holds.
const yieldUnder = 50 * time.Microsecond

// stop starts a stop that workerd did not ask for: it tells workerd that no
// job should come, and cancels the running handler with cause, if not nil.
func (s *server) stop(cause error) error {
	if s.job != nil && cause != nil {
		s.cancel(cause)
	}
	if s.draining {
		return nil
	}
	s.draining = true
	return s.send(proto.Message{Op: proto.OpBusy})
}

// handle acts on one message from workerd.
func (s *server) handle(in inbound) error {
	if errors.Is(in.err, io.EOF) {
		if s.shutdown {
			return nil // workerd closed the channel after shutdown: finish the job
		}
		return ErrChannelClosed
	}
	if in.err != nil {
		return fmt.Errorf("worker: read channel: %w", in.err)
	}
	m := in.msg
	switch m.Op {
	case proto.OpJob:
		return s.accept(m)
	case proto.OpCancel:
		if i := slices.IndexFunc(s.queue, func(q proto.Message) bool { return q.ID == m.ID }); i >= 0 {
			s.queue = slices.Delete(s.queue, i, i+1)
			return s.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: errCancelled.Error()})
		}
		if s.job == nil || s.job.ID != m.ID {
			s.log.Warn("worker: ignoring cancel of a job that is not running", "job", m.ID)
			return nil
		}
		s.cancel(errCancelled)
	case proto.OpShutdown:
		s.draining, s.shutdown = true, true
	default:
		s.log.Warn("worker: ignoring unknown op from workerd", "op", m.Op)
	}
	return nil
}

// accept starts the job of m if the worker is free to run it, or queues it
// behind the running one, up to the prefetch. workerd sends no more than
// that; any other job is refused with a retryable error, so that it is not
// lost.
func (s *server) accept(m proto.Message) error {
	var refusal string
	switch {
	case m.ID == "":
		s.log.Warn("worker: ignoring a job without an id", "type", m.Type)
		return nil
	case s.draining:
		refusal = "worker: shutting down"
	case s.job != nil && len(s.queue) >= s.prefetch:
		refusal = "worker: busy with job " + s.job.ID
	case s.job != nil:
		s.queue = append(s.queue, m)
		return nil
	}
	if refusal != "" {
		s.log.Warn("worker: refusing a job", "job", m.ID, "err", refusal)
		return s.send(proto.Message{Op: proto.OpDone, ID: m.ID, Error: refusal})
	}
	s.start(m)
	return nil
}

// start runs the job of m in its own goroutine.
func (s *server) start(m proto.Message) {
	job := &Job{ID: m.ID, Type: m.Type, Payload: m.Payload, Attempt: m.Attempt}
	ctx, cancel := context.WithCancelCause(s.base)
	s.job, s.cancel = job, cancel
	go func() { s.finished <- s.call(ctx, job) }()
}

// call runs the handler on job, recovering a panic, and encodes its result.
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

// finish reports the outcome of the running job and starts the next queued
// one, unless the worker is stopping: then the queued jobs are left
// unanswered, and workerd gives them to another worker when this one exits,
// as jobs that never started.
func (s *server) finish(o outcome) error {
	s.cancel(nil)
	s.job, s.cancel = nil, nil
	if s.avgRun == 0 {
		s.avgRun = max(o.took, 1)
	} else {
		s.avgRun = max(s.avgRun+(o.took-s.avgRun)/8, 1)
	}
	m := proto.Message{Op: proto.OpDone, ID: o.id, Result: o.result}
	if o.err != nil {
		m.Error = cmp.Or(o.err.Error(), fmt.Sprintf("%T with an empty message", o.err))
		m.Permanent = IsPermanent(o.err)
	}
	if err := s.answer(m); err != nil {
		return err
	}
	if len(s.queue) > 0 && !s.draining {
		next := s.queue[0]
		s.queue = slices.Delete(s.queue, 0, 1)
		s.start(next)
	}
	return nil
}

// abandon cancels the running handler, if any, with cause and waits for it
// to return. Its outcome is not reported.
func (s *server) abandon(cause error) {
	if s.job == nil {
		return
	}
	s.cancel(cause)
	<-s.finished
	s.job, s.cancel = nil, nil
}

// send writes m now, after the messages still pending.
func (s *server) send(m proto.Message) error {
	if err := s.answer(m); err != nil {
		return err
	}
	return s.flush()
}

// answer encodes m for the next flush.
func (s *server) answer(m proto.Message) error {
	b, err := proto.Append(s.pending, m)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if len(s.pending) == 0 {
		s.pendOp = m.Op
	}
	s.pending = b
	return nil
}

// flush writes the pending messages, in one write.
func (s *server) flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	what := string(s.pendOp)
	if bytes.Count(s.pending, []byte{'\n'}) > 1 {
		what += " and more"
	}
	err := s.out.WriteLines(s.pending, what)
	s.pending = s.pending[:0]
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}
