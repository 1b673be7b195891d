// The reader goroutine, started by Run: it reads workerd's messages until
// the channel ends or fails. Under mu it queues jobs (or refuses them),
// cancels a queued job or the running one, marks a shutdown and sets err;
// it starts a job itself only for the late job after a stop (acceptLocked).
// It flushes the answers it makes (refusals, cancelled queued jobs) and
// wakes the runner once a read's jobs are all queued.

package worker

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/conductor-run/conductor/internal/proto"
)

// read turns workerd's lines into the server's state until reading fails.
// Bad lines are logged and skipped.
func (s *server) read(r *proto.Reader) {
	for {
		m, err := r.Read()
		long, _ := errors.AsType[*proto.LineTooLongError](err)
		if long != nil && long.Op == proto.OpReply && long.Req != 0 {
			// A reply too long to read: its request fails, rather than
			// wait for ever.
			s.mu.Lock()
			s.replyLocked(proto.Message{Op: proto.OpReply, Req: long.Req, Code: 413,
				Error: fmt.Sprintf("the reply of %d bytes is over the channel's line limit of %d bytes", long.Size, long.Max)})
			s.mu.Unlock()
		} else if long != nil && long.Op == proto.OpJob && long.ID != "" {
			// A job too large to read: answered, as a refusal is, rather
			// than left running in workerd's eyes. Another worker of the
			// pool has the same limit.
			s.mu.Lock()
			s.answerLocked(proto.Message{Op: proto.OpDone, ID: long.ID, Permanent: true,
				Error: fmt.Sprintf("worker: the job of %d bytes is over the channel's limit of %d bytes", long.Size, long.Max)})
			s.mu.Unlock()
			s.flush()
		} else if _, bad := errors.AsType[*proto.SyntaxError](err); bad || errors.Is(err, proto.ErrLineTooLong) {
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
		s.endAsksLocked(ErrChannelClosed)
		return
	case errors.Is(err, io.EOF):
		err = ErrChannelClosed
	default:
		err = fmt.Errorf("worker: read channel: %w", err)
	}
	s.failLocked(err)
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
	case proto.OpReply:
		s.replyLocked(m)
	case proto.OpDrop:
		s.dropKeptLocked(m.Name, m.Key)
	case proto.OpMessage:
		s.messageLocked(m.Data)
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
