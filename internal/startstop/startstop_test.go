package startstop_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/startstop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFunc_StartStop(t *testing.T) {
	t.Parallel()
	ran := make(chan struct{})
	var cause error
	s := startstop.NewFunc(func(ctx context.Context) {
		close(ran)
		<-ctx.Done()
		cause = context.Cause(ctx)
	})
	require.NoError(t, s.Start(context.Background()))
	<-ran
	select {
	case <-s.Stopped():
		t.Fatal("stopped before Stop")
	default:
	}
	s.Stop()
	<-s.Stopped()
	require.ErrorIs(t, cause, startstop.ErrStopped)
	s.Stop() // idempotent
}

func TestFunc_StopBeforeStart(t *testing.T) {
	t.Parallel()
	s := startstop.NewFunc(func(ctx context.Context) { <-ctx.Done() })
	s.Stop()
	<-s.Stopped()
}

func TestFunc_SecondStartDoesNothing(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	s := startstop.NewFunc(func(ctx context.Context) { runs.Add(1); <-ctx.Done() })
	require.NoError(t, s.Start(context.Background()))
	require.NoError(t, s.Start(context.Background()))
	s.Stop()
	require.EqualValues(t, 1, runs.Load())
}

func TestFunc_ParentCancelStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	s := startstop.NewFunc(func(ctx context.Context) { <-ctx.Done() })
	require.NoError(t, s.Start(ctx))
	cancel()
	<-s.Stopped()
	s.Stop()
}

func TestFunc_Restart(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	s := startstop.NewFunc(func(ctx context.Context) { runs.Add(1); <-ctx.Done() })
	for range 3 {
		require.NoError(t, s.Start(context.Background()))
		s.Stop()
	}
	require.EqualValues(t, 3, runs.Load())
}

// TestFunc_Stress starts and stops one service from many goroutines at
// once: under -race, no start is lost, no stop returns early.
func TestFunc_Stress(t *testing.T) {
	t.Parallel()
	var running atomic.Int32
	s := startstop.NewFunc(func(ctx context.Context) {
		if running.Add(1) != 1 {
			panic("two runs at once")
		}
		<-ctx.Done()
		running.Add(-1)
	})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 200 {
				if (i+j)%2 == 0 {
					_ = s.Start(context.Background())
				} else {
					s.Stop()
				}
			}
		})
	}
	wg.Wait()
	s.Stop()
	require.Zero(t, running.Load())
}

type failing struct{ startstop.Base }

func (*failing) Start(context.Context) error { return errors.New("no") }

func TestStartAll_StopsStartedOnError(t *testing.T) {
	t.Parallel()
	a := startstop.NewFunc(func(ctx context.Context) { <-ctx.Done() })
	b := startstop.NewFunc(func(ctx context.Context) { <-ctx.Done() })
	err := startstop.StartAll(context.Background(), a, b, &failing{})
	require.EqualError(t, err, "no")
	<-a.Stopped()
	<-b.Stopped()
}

func TestStopAll_ReverseOrder(t *testing.T) {
	t.Parallel()
	var order []int
	var mu sync.Mutex
	mk := func(i int) *startstop.Func {
		return startstop.NewFunc(func(ctx context.Context) {
			<-ctx.Done()
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
	}
	s := []startstop.Service{mk(1), mk(2), mk(3)}
	require.NoError(t, startstop.StartAll(context.Background(), s...))
	startstop.StopAll(s...)
	require.Equal(t, []int{3, 2, 1}, order)
}

// once is a service that runs once.
type once struct {
	startstop.Base
}

func (o *once) Start(ctx context.Context) error {
	ctx, ok, done, err := o.StartInitOnce(ctx)
	if err != nil || !ok {
		return err
	}
	go func() {
		defer done()
		<-ctx.Done()
	}()
	return nil
}

func TestBase_StartInitOnce(t *testing.T) {
	t.Parallel()
	o := &once{}
	require.NoError(t, o.Start(context.Background()))
	require.NoError(t, o.Start(context.Background()), "a second Start while it runs does nothing")
	o.Stop()
	require.ErrorIs(t, o.Start(context.Background()), startstop.ErrRanOnce)

	early := &once{}
	early.Stop() // before any Start: not a run
	require.NoError(t, early.Start(context.Background()))
	early.Stop()

	// A service that may run again is not affected by its earlier stops.
	f := startstop.NewFunc(func(ctx context.Context) { <-ctx.Done() })
	f.Stop()
	require.NoError(t, f.Start(context.Background()))
	f.Stop()
}

// TestRetry: f runs again after each return, the waits doubling from
// 100ms; cancelling ctx ends it, during a wait or a run.
func TestRetry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	var waits []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		startstop.Retry(ctx, func(ctx context.Context) error {
			runs++
			if runs == 4 {
				cancel()
				<-ctx.Done()
			}
			return errors.New("broken")
		}, func(err error, wait time.Duration) {
			waits = append(waits, wait)
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Retry did not end with its context")
	}
	if runs != 4 || len(waits) != 3 || waits[0] != 100*time.Millisecond || waits[1] != 200*time.Millisecond || waits[2] != 400*time.Millisecond {
		t.Fatalf("runs %d, waits %v: want 4 runs and waits of 100ms, 200ms, 400ms", runs, waits)
	}
}
