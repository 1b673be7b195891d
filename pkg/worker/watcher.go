// The watcher goroutine, started by Run and ended by it (done): it acts on
// Run's stop signals, ctx and WithHardStop, under mu (draining, lateMay,
// the running handler's cancel, the busy op), and writes the answers the
// runner held back (armed) once they have waited holdMax.

package worker

import (
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

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
