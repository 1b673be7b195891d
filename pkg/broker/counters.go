// A worker's counters (docs/stats.md): the count op adds to its slot's
// counters, which Pool.Workers shows beside JobsDone, and workerd's
// heartbeat carries to conductord, which rolls them up. They belong to the
// slot, as JobsDone does: a process that dies takes none of its counts
// with it, and its replacement counts on.

package broker

import (
	"fmt"
	"math"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/internal/token"
)

// Bounds of a worker's counters: how many names a slot holds, and how
// long a name is.
const (
	MaxCounters    = 64
	MaxCounterName = 64
)

// count takes a count op: every increment is checked first, and one bad
// refuses the op (logged once per process), so that an op counts all or
// nothing.
func (ss *session) count(m proto.Message) {
	if err := ss.s.addCounters(m.Counters); err != nil && !ss.warnedCount {
		ss.warnedCount = true
		ss.s.log.Warn("count op refused (said once per process)", "pid", ss.p.pid, "err", err)
	}
}

// addCounters adds incs to the slot's counters, if every one is a
// counter's name and a finite number and they stay within MaxCounters.
func (s *slot) addCounters(incs map[string]float64) error {
	for name, n := range incs {
		if len(name) > MaxCounterName {
			return fmt.Errorf("counter name %.80q: over %d bytes", name, MaxCounterName)
		}
		if err := token.Check("counter name", name); err != nil {
			return err
		}
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return fmt.Errorf("counter %s: %v is not a number to count", name, n)
		}
	}
	var err error
	s.update(func(w *Worker) {
		added := 0
		for name := range incs {
			if _, ok := w.Counters[name]; !ok {
				added++
			}
		}
		if len(w.Counters)+added > MaxCounters {
			err = fmt.Errorf("%d counters, over %d", len(w.Counters)+added, MaxCounters)
			return
		}
		for name, n := range incs {
			if sum := w.Counters[name] + n; math.IsInf(sum, 0) || math.IsNaN(sum) {
				err = fmt.Errorf("counter %s: %v + %v is past what a counter holds", name, w.Counters[name], n)
				return
			}
		}
		if w.Counters == nil {
			w.Counters = make(map[string]float64, len(incs))
		}
		for name, n := range incs {
			w.Counters[name] += n
		}
	})
	return err
}
