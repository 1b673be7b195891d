package worker

import (
	"math"

	"github.com/conductor-run/conductor/internal/token"
)

// Count adds n to the worker's counter name (docs/stats.md): workerd
// keeps the worker's counters, beside the jobs it has done, and the
// conductor rolls them up across workers and hosts every interval
// (okanjo's stats). Counts are written with the job's answer, several in
// one op. A name is 1 to 64 of [A-Za-z0-9_-], at most 64 names a worker;
// a name or number workerd refuses (NaN, an infinity) is logged there and
// counts nothing. Count on a Job made by hand does nothing.
func (j *Job) Count(name string, n float64) { j.srv.count(name, n) }

// Count is Job.Count, from a message's handler.
func (m *Message) Count(name string, n float64) { m.srv.count(name, n) }

func (s *server) count(name string, n float64) {
	if s == nil {
		return
	}
	// Refused here, so that one bad count does not spoil the op it would
	// go in.
	if err := token.Check("counter name", name); err != nil || len(name) > 64 || math.IsNaN(n) || math.IsInf(n, 0) {
		s.log.Warn("worker: count refused", "counter", name, "n", n, "err", err)
		return
	}
	s.mu.Lock()
	if s.counts == nil {
		s.counts = make(map[string]float64)
	}
	if sum := s.counts[name] + n; math.IsInf(sum, 0) {
		s.mu.Unlock()
		s.log.Warn("worker: count refused: past what a counter holds", "counter", name, "n", n)
		return
	}
	s.counts[name] += n
	idle := s.job == nil
	s.mu.Unlock()
	if idle {
		s.flush() // no answer of a job's to go with
	}
}
