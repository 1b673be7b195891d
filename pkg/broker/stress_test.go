package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// ledger is a Source that never runs dry and checks the Source contract:
// Done exactly once for every job Next returned.
type ledger struct {
	mu      sync.Mutex
	n       int
	open    map[string]bool // given, not done
	done    int
	crashed int
	dupes   []string
	reached chan struct{} // closed when done reaches target
	target  int
}

var _ broker.Source = (*ledger)(nil)

func (l *ledger) Next(ctx context.Context) (*broker.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	id := "j" + strconv.Itoa(l.n)
	l.open[id] = true
	return &broker.Job{ID: id, Type: "test", Payload: json.RawMessage(strconv.Itoa(l.n)), Attempt: 1}, nil
}

func (l *ledger) Done(j *broker.Job, out broker.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open[j.ID] {
		l.dupes = append(l.dupes, j.ID)
		return
	}
	delete(l.open, j.ID)
	l.done++
	if out.Crashed || out.NotStarted {
		l.crashed++
	} else if string(out.Result) != string(j.Payload) {
		l.dupes = append(l.dupes, j.ID+" (wrong result)")
	}
	if l.done == l.target {
		close(l.reached)
	}
}

// TestPool_Stop_stress stops and kills busy pools at arbitrary points,
// with Workers read concurrently, and checks that every job handed out is
// settled exactly once and no process is left.
func TestPool_Stop_stress(t *testing.T) {
	t.Parallel()
	for i := range 8 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			b := newBundle(t)
			src := &ledger{open: map[string]bool{}, reached: make(chan struct{}), target: 20 + 15*i}
			spec := b.spec("echo")
			spec.Count = 3
			cfg := b.config(spec)
			cfg.Source = src
			pool, err := broker.NewPool(cfg)
			require.NoError(t, err)
			require.NoError(t, pool.Start(context.Background()))

			pids := map[int]bool{}
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				for {
					for _, w := range pool.Workers() {
						if w.PID != 0 {
							pids[w.PID] = true
						}
					}
					select {
					case <-pool.Stopped():
						return
					default:
					}
				}
			}()
			select {
			case <-src.reached:
			case <-time.After(waitLimit):
				t.Fatal("jobs did not flow")
			}
			var wg sync.WaitGroup
			wg.Go(pool.Stop)
			if i%2 == 1 {
				wg.Go(pool.Kill)
			}
			wg.Go(func() { _ = pool.Info() })
			wg.Wait()
			<-watched

			src.mu.Lock()
			defer src.mu.Unlock()
			require.Empty(t, src.open, "jobs never settled")
			require.Empty(t, src.dupes, "jobs settled twice or wrongly")
			require.GreaterOrEqual(t, src.done, src.target)
			for pid := range pids {
				requireGone(t, pid)
			}
		})
	}
}

// TestPool_StartStop_stress races Start against Stop, Kill and the cancel
// of Start's context, from several goroutines at once, while others read
// the pool, on fresh pools under -race: each Start returns nil (it started
// the pool, or found it running) or ErrStopped; Stop and Kill return with the
// pool stopped, Stopped is closed, and no worker process is left.
func TestPool_StartStop_stress(t *testing.T) {
	t.Parallel()
	stoppers := []struct {
		name string
		stop func(*broker.Pool, context.CancelFunc)
	}{
		{"Stop", func(p *broker.Pool, _ context.CancelFunc) { p.Stop() }},
		{"Kill", func(p *broker.Pool, _ context.CancelFunc) { p.Kill() }},
		{"Cancel", func(_ *broker.Pool, cancel context.CancelFunc) { cancel() }},
		{"All", func(p *broker.Pool, cancel context.CancelFunc) {
			var wg sync.WaitGroup
			wg.Go(p.Stop)
			wg.Go(p.Kill)
			wg.Go(cancel)
			wg.Wait()
		}},
	}
	for _, st := range stoppers {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			for range 4 {
				startStopRound(t, st.stop)
			}
		})
	}
}

// startStopRound starts a new pool from 4 goroutines at once while stop
// stops it, and checks the outcome.
func startStopRound(t *testing.T, stop func(*broker.Pool, context.CancelFunc)) {
	t.Helper()
	b := newBundle(t)
	spec := b.spec("echo")
	spec.Count = 2
	cfg := b.config(spec)
	var mu sync.Mutex
	pids := map[int]bool{}
	cfg.OnEvent = func(e broker.Event) {
		if e.Kind == broker.EventWorkerStart {
			mu.Lock()
			pids[e.PID] = true
			mu.Unlock()
		}
	}
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var started atomic.Int32
	var wg sync.WaitGroup
	gate := make(chan struct{}) // opened once every goroutine is there
	for range 4 {
		wg.Go(func() {
			<-gate
			switch err := pool.Start(ctx); {
			case err == nil:
				started.Add(1)
			case errors.Is(err, broker.ErrStopped):
			default:
				t.Errorf("Start: %v", err)
			}
		})
	}
	wg.Go(func() {
		<-gate
		stop(pool, cancel)
	})
	wg.Go(func() {
		<-gate
		for {
			_ = pool.Info()
			_ = pool.Workers()
			select {
			case <-pool.Stopped():
				return
			default:
			}
		}
	})
	close(gate)
	select {
	case <-pool.Stopped():
	case <-time.After(waitLimit):
		t.Fatal("the pool did not stop")
	}
	wg.Wait()
	pool.Stop() // idempotent, after any stop

	t.Logf("%d of 4 Starts returned nil", started.Load())
	require.Equal(t, broker.PoolStopped, pool.Info().State)
	require.ErrorIs(t, pool.Start(context.Background()), broker.ErrStopped)
	mu.Lock()
	defer mu.Unlock()
	for pid := range pids {
		requireGone(t, pid)
	}
}
