package agent

import (
	"cmp"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/flow"
)

// pace is what the source knows of its pool's pace: its size, and the
// moving averages of its attempts and payloads, from which it decides how
// many jobs to hold ahead (internal/flow has the arithmetic). It has no
// goroutine: Done observes attempts, the fetcher's deliveries observe
// payloads, and the fetcher and the publisher read it. mu guards all of it
// and is taken under no other lock.
type pace struct {
	perWorker int // at most this many jobs held ahead per worker; 0: none
	holdBytes int // bound on the payloads held ahead

	mu      sync.Mutex
	workers int
	avgRun  flow.Average // of attempt durations, in nanoseconds
	avgSize flow.Average // of payload sizes, in bytes
}

func newPace(workers, perWorker, holdBytes int) *pace {
	return &pace{workers: max(workers, 1), perWorker: perWorker, holdBytes: cmp.Or(holdBytes, flow.HoldBytes)}
}

// resize sets the pool's size.
func (p *pace) resize(workers int) {
	p.mu.Lock()
	p.workers = max(workers, 1)
	p.mu.Unlock()
}

// observe folds one attempt's duration into the average.
func (p *pace) observe(d time.Duration) {
	p.mu.Lock()
	p.avgRun.Add(int64(d))
	p.mu.Unlock()
}

// sized folds one payload's size into the average.
func (p *pace) sized(n int) {
	p.mu.Lock()
	p.avgSize.Add(int64(max(n, 1)))
	p.mu.Unlock()
}

// ahead is how many jobs to hold beyond the waiting workers (flow.Ahead).
func (p *pace) ahead() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return flow.Ahead(p.workers, p.perWorker, p.avgRun.Duration(), int(p.avgSize.Value()), p.holdBytes)
}

// short reports whether the pool's jobs are known to be short.
func (p *pace) short() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return flow.Short(p.avgRun.Duration())
}
