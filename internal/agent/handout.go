package agent

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
)

// handout matches the jobs at hand with the workers waiting for them. It
// has no goroutine: the fetcher delivers jobs into it, and each worker's
// Next (or TryNext) takes them out. Its state is guarded by mu, which is
// held for no I/O and taken under no other lock. ready and waiters are
// never both non-empty.
type handout struct {
	rank func(*nats.Msg) int // a job's priority: 0 is the highest
	// testWaiting, if set (by tests, before any Next), is called with the
	// number of waiting workers each time one starts to wait.
	testWaiting func(n int)

	mu      sync.Mutex
	ready   []*nats.Msg // jobs no worker has taken yet, highest priority first
	waiters []waiter    // Next calls waiting for a job, oldest first
	closed  bool        // drained: Next waits no more
	done    chan struct{}
	// paused (the pool is drained, or stopping) keeps no job, not even for
	// a waiting worker; failed (its crash-loop breaker tripped) keeps none
	// at hand, handing jobs only to workers waiting for one. A job the
	// handout does not keep, deliver refuses, for the caller to put back.
	paused, failed bool
}

// waiter is a Next call waiting for a job, and the load of its worker.
type waiter struct {
	ch   chan *nats.Msg
	load int64
}

// errSourceClosed is Next's error once the source has closed.
var errSourceClosed = errors.New("job source closed")

func newHandout(rank func(*nats.Msg) int) *handout {
	return &handout{rank: rank, done: make(chan struct{})}
}

// counts reports the workers waiting and the jobs at hand.
func (o *handout) counts() (waiting, ready int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.waiters), len(o.ready)
}

// holding reports whether the pool is paused or failed (see handout).
func (o *handout) holding() (paused, failed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.paused, o.failed
}

// setPaused pauses or resumes the pool; pausing returns every job at hand,
// for the caller to put back.
func (o *handout) setPaused(paused bool) []*nats.Msg {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.paused = paused
	return o.refusedLocked()
}

// setFailed marks the pool failed or not; failing returns every job at
// hand, for the caller to put back.
func (o *handout) setFailed(failed bool) []*nats.Msg {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failed = failed
	return o.refusedLocked()
}

// refusedLocked takes out the jobs at hand if the handout keeps none now.
// o.mu is held.
func (o *handout) refusedLocked() []*nats.Msg {
	if !o.paused && !o.failed {
		return nil
	}
	back := o.ready
	o.ready = nil
	return back
}

// peek reports the jobs at hand and returns the first n of them (in the
// order they go to workers), for the heartbeat to name.
func (o *handout) peek(n int) (held int, first []*nats.Msg) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ready), slices.Clone(o.ready[:min(n, len(o.ready))])
}

// tryTake returns the first job at hand if its payload is at most
// maxPayload bytes (< 0: any), else nil. A job to be queued behind
// another (maxPayload >= 0) is not one delivered before (see
// source.TryNext).
func (o *handout) tryTake(maxPayload int) *nats.Msg {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.ready) == 0 || (maxPayload >= 0 && (payloadSize(o.ready[0]) > maxPayload || deliveredBefore(o.ready[0]))) {
		return nil
	}
	m := o.ready[0]
	o.ready = o.ready[1:]
	return m
}

// payloadSize is the size of m's payload: its data's, or for a payload
// passed by reference the size its headers name (any read past an int, if
// they name none that reads).
func payloadSize(m *nats.Msg) int {
	if len(m.Data) > 0 || m.Header.Get(names.HeaderPayloadObject) == "" {
		return len(m.Data)
	}
	n, err := strconv.Atoi(m.Header.Get(names.HeaderPayloadSize))
	if err != nil || n < 0 {
		return math.MaxInt
	}
	return n
}

// await returns the next job, waiting for one if none is at hand. load is
// the waiting worker's (its RSS): when several wait, the least loaded gets
// the next job. changed is called when the demand changed.
func (o *handout) await(ctx context.Context, load int64, changed func()) (*nats.Msg, error) {
	o.mu.Lock()
	if len(o.ready) > 0 {
		m := o.ready[0]
		o.ready = o.ready[1:]
		o.mu.Unlock()
		changed()
		return m, nil
	}
	if o.closed {
		o.mu.Unlock()
		return nil, errSourceClosed
	}
	ch := make(chan *nats.Msg, 1)
	o.waiters = append(o.waiters, waiter{ch: ch, load: load})
	if o.testWaiting != nil {
		o.testWaiting(len(o.waiters))
	}
	o.mu.Unlock()
	changed()

	var err error
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-o.done:
		err = errSourceClosed
	}
	o.mu.Lock()
	if i := slices.IndexFunc(o.waiters, func(w waiter) bool { return w.ch == ch }); i >= 0 {
		o.waiters = slices.Delete(o.waiters, i, i+1)
	}
	select {
	case m := <-ch: // it came as we gave up: to another waiter, or first in line
		if len(o.waiters) > 0 {
			o.takeWaiterLocked() <- m
		} else {
			o.ready = slices.Insert(o.ready, 0, m)
		}
	default:
	}
	o.mu.Unlock()
	changed()
	return nil, err
}

// takeWaiterLocked removes and returns the waiter whose worker has the
// least load, the oldest of those equal. o.mu is held; waiters is not
// empty.
func (o *handout) takeWaiterLocked() chan *nats.Msg {
	best := 0
	for i, w := range o.waiters {
		if w.load < o.waiters[best].load {
			best = i
		}
	}
	ch := o.waiters[best].ch
	o.waiters = slices.Delete(o.waiters, best, best+1)
	return ch
}

// deliver hands a job to a waiting worker (see takeWaiterLocked), or keeps
// it at hand, behind the jobs of its priority and above lower ones. It
// reports false if it did neither: the pool is paused, or failed with no
// worker waiting; the caller puts the job back.
func (o *handout) deliver(m *nats.Msg) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.paused:
		return false
	case len(o.waiters) > 0:
		o.takeWaiterLocked() <- m
		return true
	case o.failed:
		return false
	}
	r := o.rank(m)
	i := len(o.ready)
	for i > 0 && o.rank(o.ready[i-1]) > r {
		i--
	}
	o.ready = slices.Insert(o.ready, i, m)
	return true
}

// takeBack removes the n jobs at hand of the lowest priority (all if n is
// at least their number) and returns them, for the caller to put back.
func (o *handout) takeBack(n int) []*nats.Msg {
	o.mu.Lock()
	defer o.mu.Unlock()
	n = min(max(n, 0), len(o.ready))
	cut := len(o.ready) - n
	back := slices.Clone(o.ready[cut:])
	clear(o.ready[cut:])
	o.ready = o.ready[:cut]
	return back
}

// drain ends the handout: waiting Next calls return, and the jobs at hand
// are returned for the caller to put back.
func (o *handout) drain() []*nats.Msg {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		close(o.done)
	}
	left := o.ready
	o.ready = nil
	return left
}

// deliveredBefore reports whether m was delivered before: the delivery
// count of its ack subject is past 1, read in place (it is asked of every
// job queued behind another, and Msg.Metadata allocates, which the job's
// own identify does once anyway). The subject is
// $JS.ACK.<stream>.<consumer>.<delivered>.… (9 tokens), or, from newer
// servers, $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.…
// (11 or more).
func deliveredBefore(m *nats.Msg) bool {
	r, ok := strings.CutPrefix(m.Reply, "$JS.ACK.")
	if !ok {
		return false
	}
	pos := 2 // of the delivery count, after the prefix: v1
	if strings.Count(r, ".")+3 >= 11 {
		pos = 4 // v2
	}
	for range pos {
		if _, r, ok = strings.Cut(r, "."); !ok {
			return false
		}
	}
	n, _, _ := strings.Cut(r, ".")
	return n != "" && n != "1" && strings.Trim(n, "0123456789") == ""
}
