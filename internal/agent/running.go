package agent

import (
	"context"
	"slices"
	"sync"
	"time"
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
// per job. Each write waits for the store's answer, which moves the job's
// revision on (fence.go), on a goroutine of its own, at most
// runningParallel at once (sem), counted in writes: a slow store holds up
// no pass.
type runner struct {
	states *states
	sweep  chan struct{} // add -> run: started was empty
	sem    chan struct{}
	writes sync.WaitGroup

	mu      sync.Mutex
	started []*heldJob
}

// runningParallel bounds the running states being written at once.
const runningParallel = 16

func newRunner(states *states) *runner {
	return &runner{states: states, sweep: make(chan struct{}, 1), sem: make(chan struct{}, runningParallel)}
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
			r.store(ctx, h)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.sweep:
		case <-next:
		}
	}
}

// wait waits for the running states being written.
func (r *runner) wait() { r.writes.Wait() }

// store stores the running state of a job that has not ended yet, unless
// its claim stored one already. Its final state may be written before
// this one lands: whichever comes second finds the revision moved, and
// the final write reads the state again (fence.go).
func (r *runner) store(ctx context.Context, h *heldJob) {
	h.mu.Lock()
	if h.finished || h.claimed {
		h.mu.Unlock()
		return
	}
	st, rev := h.state, h.rev
	st.History = slices.Clone(st.History) // Done writes the attempt's end into h's
	h.mu.Unlock()
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	r.writes.Go(func() {
		defer func() { <-r.sem }()
		r.states.storeRunning(h, &st, rev)
	})
}
