package wire

import (
	"sync"
	"time"
)

// HistogramBounds are the upper bounds, in seconds, of the buckets of
// every Histogram: from a millisecond to ten minutes.
var HistogramBounds = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600}

// Histogram counts durations by bucket (HistogramBounds, then one past
// the last for longer ones), as a host's heartbeat carries them for a
// pool: since its workerd started.
type Histogram struct {
	// Counts has one count per bucket: len(HistogramBounds)+1.
	Counts []uint64 `json:"counts"`
	// Sum is the sum of the durations, in seconds.
	Sum float64 `json:"sum"`
}

// Observations counts durations into a Histogram; it is safe for
// concurrent use.
type Observations struct {
	mu sync.Mutex
	h  Histogram
}

// Observe counts d (a negative one as zero).
func (o *Observations) Observe(d time.Duration) {
	s := max(d.Seconds(), 0)
	i := 0
	for i < len(HistogramBounds) && s > HistogramBounds[i] {
		i++
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h.Counts == nil {
		o.h.Counts = make([]uint64, len(HistogramBounds)+1)
	}
	o.h.Counts[i]++
	o.h.Sum += s
}

// Snapshot returns a copy of the counts so far; nil if there are none.
func (o *Observations) Snapshot() *Histogram {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h.Counts == nil {
		return nil
	}
	return &Histogram{Counts: append([]uint64(nil), o.h.Counts...), Sum: o.h.Sum}
}
