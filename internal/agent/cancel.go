package agent

import (
	"context"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/startstop"
)

// cancels is the host's copy of the cancel bucket: the ids of cancelled
// jobs, fed by a watcher of the bucket. A job whose id is in it is not
// given to a worker, and one that runs is cut short.
type cancels struct {
	mu     sync.Mutex
	ids    map[string]time.Time // id -> when it was cancelled
	ttl    time.Duration        // the bucket's TTL: an older entry is gone from it too
	pruned time.Time            // when add last forgot the entries past the TTL

	// loaded is closed once every cancel stored when the watch began has
	// been recorded: no job source takes a job before, so that no job
	// cancelled while this host was away reaches a worker.
	loaded     chan struct{}
	loadedOnce sync.Once
}

// pruneEvery spaces the sweeps of add, so that loading many cancels at
// start does not sweep the whole map at each.
const pruneEvery = time.Minute

func newCancels() *cancels {
	return &cancels{ids: map[string]time.Time{}, loaded: make(chan struct{})}
}

// markLoaded records that the cancels stored before the watch are in.
func (c *cancels) markLoaded() { c.loadedOnce.Do(func() { close(c.loaded) }) }

// waitLoaded waits until the cancels stored before the watch are in, or
// ctx ends.
func (c *cancels) waitLoaded(ctx context.Context) error {
	select {
	case <-c.loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// has reports whether job id was cancelled.
func (c *cancels) has(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[id]
	return ok
}

// add records a cancel made at t, conductord holding it for ttl (the
// cancel bucket's), forgets those past it, and reports whether id is new.
func (c *cancels) add(id string, t time.Time, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ttl = ttl
	_, known := c.ids[id]
	c.ids[id] = t
	if c.ttl > 0 && time.Since(c.pruned) >= pruneEvery {
		c.pruned = time.Now()
		for k, at := range c.ids {
			if time.Since(at) > c.ttl {
				delete(c.ids, k)
			}
		}
	}
	return !known
}

// watchCancels follows the cancelled jobs conductord passes on
// (internal/hostsvc) until ctx ends, retrying until it answers: every
// cancel, past and new, is recorded, and each new one is passed to the
// pools, which cut the job short if one of their workers runs it.
func (a *Agent) watchCancels(ctx context.Context) {
	rec := cancelRecorder{a}
	startstop.Retry(ctx, func(ctx context.Context) error { return a.svc.Follow(ctx, rec, a.cancelCheck) },
		func(err error, wait time.Duration) {
			a.log.Warn("cannot follow the cancelled jobs; retrying", "err", err, "retry_in", wait)
		})
}

// cancelRecorder records the cancels Follow learns into the agent's.
type cancelRecorder struct{ a *Agent }

func (r cancelRecorder) Cancelled(id string, ttl time.Duration) {
	if !r.a.cancels.add(id, time.Now(), ttl) {
		return
	}
	for _, p := range r.a.poolList() {
		if bp, _ := p.running(); bp != nil && bp.Cancel(id) {
			r.a.log.Info("job cancelled while running", "pool", p.spec.Name, "job", id)
		}
	}
}

func (r cancelRecorder) Loaded() { r.a.cancels.markLoaded() }
