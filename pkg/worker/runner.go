// The runner: the goroutine that called Run, once ready is sent. It alone
// calls the handler, clears the running job (job, ctx, cancel) when it is
// answered, and adds to avgRun; it waits on wake when there is nothing to
// do. startHeadLocked, which makes the head of the queue the running job,
// is called under mu by the runner, and also by the reader (acceptLocked)
// and the watcher (stop).

package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

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
	s.job = &Job{ID: m.ID, Type: m.Type, Payload: m.Payload, Attempt: m.Attempt, Redelivered: m.Redelivered, srv: s}
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
	s.countsLocked() // the job's counts go before its answer
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
