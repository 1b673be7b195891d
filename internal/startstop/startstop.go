// Package startstop is the one lifecycle of conductor's long-running parts:
// a Service starts with Start(ctx), which returns once it has started, and
// stops with Stop, which blocks until it has stopped and is safe to call any
// number of times, from any goroutine, before or after Start. Stopped is
// closed once it has stopped.
//
// A service embeds Base and runs its goroutine under the context StartInit
// gives it:
//
//	func (f *fetcher) Start(ctx context.Context) error {
//		ctx, ok, done := f.StartInit(ctx)
//		if !ok {
//			return nil // started already
//		}
//		go func() {
//			defer done()
//			f.run(ctx)
//		}()
//		return nil
//	}
//
// Stop cancels that context and waits for done. A service whose goroutine
// ends when its input closes (a pipeline stage) ignores the context; its
// Stop then waits for the input to be closed, which its owner does first.
//
// Services that depend on one another must not share a context they are
// stopped by: cancelling it stops them all at once, in no order (an agent
// whose outcomes need the conductor it runs against would lose them).
// Their owner starts them with context.WithoutCancel and stops them itself,
// in order: StopAll, or Stop one by one (pkg/conductor's RunBatch).
package startstop

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Service is a long-running part with the common lifecycle.
type Service interface {
	// Start starts the service and returns once it has started. A second
	// Start while it runs does nothing. The service stops when ctx is
	// cancelled or Stop is called, whichever is first.
	Start(ctx context.Context) error
	// Stop stops the service and waits until it has. It is idempotent and
	// returns at once if the service never started.
	Stop()
	// Stopped is closed when the service has stopped after a Start.
	Stopped() <-chan struct{}
}

// Base carries the lifecycle's state for a service that embeds it. Its zero
// value is ready to use.
type Base struct {
	mu      sync.Mutex
	cancel  context.CancelCauseFunc
	stopped chan struct{} // closed by done; replaced at each start
	ended   bool          // a run has stopped
}

// ErrStopped is the cause of the context of a service that Stop stopped.
var ErrStopped = errors.New("service stopped")

// ErrRanOnce is StartInitOnce's error for a service that has run.
var ErrRanOnce = errors.New("stopped; it runs once")

// StartInit begins a start. ok is false if the service runs already; else
// the service runs its goroutine under ctx (cancelled by Stop) and calls
// done when the goroutine has ended.
func (b *Base) StartInit(parent context.Context) (ctx context.Context, ok bool, done func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cancel != nil {
		return nil, false, nil
	}
	return b.startLocked(parent)
}

// StartInitOnce is StartInit for a service that runs once (it holds state
// that a run uses up): once a run has stopped, it returns ErrRanOnce. A Stop
// before any Start does not count as a run.
func (b *Base) StartInitOnce(parent context.Context) (ctx context.Context, ok bool, done func(), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.cancel != nil:
		return nil, false, nil, nil
	case b.ended:
		return nil, false, nil, ErrRanOnce
	}
	ctx, ok, done = b.startLocked(parent)
	return ctx, ok, done, nil
}

// startLocked starts a run; b.mu is held and none runs.
func (b *Base) startLocked(parent context.Context) (ctx context.Context, ok bool, done func()) {
	ctx, cancel := context.WithCancelCause(parent)
	stopped := make(chan struct{})
	b.cancel, b.stopped = cancel, stopped
	return ctx, true, func() {
		cancel(ErrStopped)
		b.mu.Lock()
		if b.stopped == stopped {
			b.cancel = nil
		}
		b.ended = true
		b.mu.Unlock()
		close(stopped)
	}
}

// Stop cancels the service's context and waits for its goroutine to end.
func (b *Base) Stop() {
	b.mu.Lock()
	cancel, stopped := b.cancel, b.stopped
	b.mu.Unlock()
	if stopped == nil {
		return
	}
	if cancel != nil {
		cancel(ErrStopped)
	}
	<-stopped
}

// Stopped is closed once the service has stopped. Before any Start it is
// a channel that is already closed.
func (b *Base) Stopped() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped == nil {
		b.stopped = make(chan struct{})
		close(b.stopped)
	}
	return b.stopped
}

// Func is a Service that runs one function until its context is done.
type Func struct {
	Base
	run func(ctx context.Context)
}

// NewFunc returns a Service that runs run on a goroutine of its own from
// Start until run returns; Stop cancels run's context and waits.
func NewFunc(run func(ctx context.Context)) *Func { return &Func{run: run} }

// Start implements Service.
func (f *Func) Start(ctx context.Context) error {
	ctx, ok, done := f.StartInit(ctx)
	if !ok {
		return nil
	}
	go func() {
		defer done()
		f.run(ctx)
	}()
	return nil
}

var _ Service = (*Func)(nil)

// StartAll starts services in order. If one fails, those already started
// are stopped, last first, and its error is returned.
func StartAll(ctx context.Context, services ...Service) error {
	for i, s := range services {
		if err := s.Start(ctx); err != nil {
			StopAll(services[:i]...)
			return err
		}
	}
	return nil
}

// StopAll stops services one after another, last first: the reverse of
// the order they were started in.
func StopAll(services ...Service) {
	for i := len(services) - 1; i >= 0; i-- {
		services[i].Stop()
	}
}

// Retry runs f until ctx ends, again each time it returns: a part that
// follows something (a watch, a feed) and begins again after a failure.
// Between two runs it waits, from 100ms doubling to 5s (back to 100ms
// after a run of a minute or more), and tells failed why and how long.
func Retry(ctx context.Context, f func(context.Context) error, failed func(err error, wait time.Duration)) {
	const first, most, long = 100 * time.Millisecond, 5 * time.Second, time.Minute
	wait := first
	for ctx.Err() == nil {
		began := time.Now()
		err := f(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) >= long {
			wait = first
		}
		failed(err, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, most)
	}
}
