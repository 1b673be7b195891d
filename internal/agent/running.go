package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// runningDelay is how long a job runs before its running state is stored.
// Shorter jobs go from queued straight to their end, which saves a store per
// job; GET /v1/jobs/{id} shows them queued meanwhile.
const runningDelay = 50 * time.Millisecond

// runner stores the running state of each job that runs past runningDelay,
// between runningDelay and 1.5 times that after it started. Its goroutine
// (run) owns the passes; mu guards started, the jobs made, oldest first,
// which the workers' Next calls append to (add). It wakes when the oldest
// is due, but no sooner than runningDelay/2 after its last pass, so that a
// pool of short jobs costs at most a pass per runningDelay/2, not a timer
// per job. A redelivered job's running state needs its history read first:
// that is done on a goroutine of its own (counted in reads), so that a slow
// read holds up no other job.
type runner struct {
	nc     *nats.Conn
	states *states
	sweep  chan struct{} // add -> run: started was empty
	reads  sync.WaitGroup

	mu      sync.Mutex
	started []*heldJob
}

func newRunner(nc *nats.Conn, states *states) *runner {
	return &runner{nc: nc, states: states, sweep: make(chan struct{}, 1)}
}

// add records that h's job runs from h.started.
func (r *runner) add(h *heldJob) {
	r.mu.Lock()
	r.started = append(r.started, h)
	first := len(r.started) == 1
	r.mu.Unlock()
	if first {
		select {
		case r.sweep <- struct{}{}:
		default:
		}
	}
}

// run makes the passes until ctx ends.
func (r *runner) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		now := time.Now()
		i := 0
		for i < len(r.started) && now.Sub(r.started[i].started) >= runningDelay {
			i++
		}
		due := slices.Clone(r.started[:i])
		clear(r.started[:i]) // no longer kept alive by the slice
		r.started = r.started[i:]
		var next <-chan time.Time
		if len(r.started) > 0 {
			t.Reset(max(runningDelay-now.Sub(r.started[0].started), runningDelay/2))
			next = t.C
		}
		r.mu.Unlock()
		for _, h := range due {
			if h.hasEarlier() {
				r.reads.Go(func() { r.store(h) })
				continue
			}
			r.store(h)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.sweep:
		case <-next:
		}
	}
}

// wait waits for the running states being written after a history read.
func (r *runner) wait() { r.reads.Wait() }

// store stores the running state of a job that has not ended yet. Fire
// and forget: the final state is published later on the same connection
// (see heldJob), and so lands after this one.
func (r *runner) store(h *heldJob) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.finished {
		return
	}
	st := h.state
	if h.hasEarlier() {
		if !h.readEarlier {
			// Off the worker's path: this runs only for a job past runningDelay.
			h.earlier, h.readEarlier = r.states.history(st.ID), true
		}
		st.History = append(slices.Clone(h.earlier), st.History...)
	}
	r.states.putRunning(r.nc, &st)
}
