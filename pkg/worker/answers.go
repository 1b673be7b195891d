// The answers to workerd: any goroutine encodes its messages into pending
// under mu (answerLocked), and any writes them, all pending at once and in
// order, with flush, which holds wmu across taking pending and writing it:
// wmu before mu. The runner holds answers back while it runs short queued
// jobs (holdUnder, in next); the watcher writes them holdMax later at most.
// send is Run's, for the ready op; end is Run's, once it closes the
// channel.

package worker

import (
	"bytes"
	"fmt"
	"time"

	"github.com/conductor-run/conductor/internal/proto"
)

// holdMax bounds how long the runner holds answers back while it runs the
// jobs queued behind them.
const holdMax = time.Millisecond

// holdUnder is the average handler run time under which the runner holds
// answers back while it runs the next queued job, to write them together.
const holdUnder = 50 * time.Microsecond

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
	s.countsLocked()
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

// countsLocked queues the counts so far (Count), in one op.
func (s *server) countsLocked() {
	if len(s.counts) > 0 {
		s.answerLocked(proto.Message{Op: proto.OpCount, Counters: s.counts})
		s.counts = nil
	}
}

// end makes every later flush write nothing: Run is closing the channel.
func (s *server) end() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ended = true
}
