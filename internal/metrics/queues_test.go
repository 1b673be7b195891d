package metrics

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// clock is a hand-moved clock.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	c.set(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC))
	return c
}
func (c *clock) now() time.Time                { return *c.t.Load() }
func (c *clock) set(t time.Time)               { c.t.Store(&t) }
func (c *clock) add(d time.Duration)           { c.set(c.now().Add(d)) }
func (c *clock) ago(d time.Duration) time.Time { return c.now().Add(-d) }

// TestCollector_Stalled: a type stalls after StallAfter with a backlog
// (queued or held) and no attempt ended; any end, of any outcome, starts
// its clock again; no backlog, no stall; a scrape that cannot read the
// pools says nothing of stalls.
func TestCollector_Stalled(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var pools []client.Pool
	var poolsErr error
	c := NewCollector(Source{
		Pools:      func(context.Context) ([]client.Pool, error) { return pools, poolsErr },
		Workers:    func() []client.Worker { return nil },
		StallAfter: time.Minute,
		now:        clk.now,
	})
	stalled := func() string {
		out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "conductor_queue_stalled")
		require.NoError(t, err)
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "conductor_queue_stalled{") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, " ")
	}
	pools = []client.Pool{{Type: "a", Queued: 5, Succeeded: 1}, {Type: "b", Held: 2}, {Type: "c", Running: 1}}
	require.Equal(t, `conductor_queue_stalled{type="a"} 0 conductor_queue_stalled{type="b"} 0 conductor_queue_stalled{type="c"} 0`, stalled(), "first seen: the clock starts")
	clk.add(59 * time.Second)
	require.Equal(t, `conductor_queue_stalled{type="a"} 0 conductor_queue_stalled{type="b"} 0 conductor_queue_stalled{type="c"} 0`, stalled())
	clk.add(time.Second)
	require.Equal(t, `conductor_queue_stalled{type="a"} 1 conductor_queue_stalled{type="b"} 1 conductor_queue_stalled{type="c"} 0`, stalled(), "c runs and has nothing queued")

	pools[0].Failed++ // a failed attempt is an end: workers are at it
	pools[1].Superseded++
	require.Equal(t, `conductor_queue_stalled{type="a"} 0 conductor_queue_stalled{type="b"} 0 conductor_queue_stalled{type="c"} 0`, stalled())
	clk.add(time.Minute)
	pools[0].Queued = 0
	require.Equal(t, `conductor_queue_stalled{type="a"} 0 conductor_queue_stalled{type="b"} 1 conductor_queue_stalled{type="c"} 0`, stalled())

	poolsErr = errors.New("no JetStream")
	require.Empty(t, stalled())
	poolsErr = nil
	pools = pools[1:2]
	require.Equal(t, `conductor_queue_stalled{type="b"} 1`, stalled(), "a and c forgotten, b's clock kept")
}

// TestCollector_QueueOldest: the ages are read at most once a second and
// of at most MaxQueueAgeTypes types; each scrape ages them by its own
// clock; an error is a gauge, not ages.
func TestCollector_QueueOldest(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var reads atomic.Int32
	var limit int
	var readErr error
	var noDeadline atomic.Bool
	queued := clk.ago(90 * time.Second)
	c := NewCollector(Source{
		Pools:   func(context.Context) ([]client.Pool, error) { return nil, nil },
		Workers: func() []client.Worker { return nil },
		QueueAges: func(ctx context.Context, max int) (map[string]time.Time, error) {
			reads.Add(1)
			limit = max
			if _, ok := ctx.Deadline(); !ok {
				noDeadline.Store(true)
			}
			return map[string]time.Time{"a": queued, "b": {}, "skewed": clk.now().Add(time.Second)}, readErr
		},
		MaxQueueAgeTypes: 7,
		now:              clk.now,
	})
	want := func(a string, errGauge string) string {
		return `
# HELP conductor_queue_oldest_seconds Age of the oldest job of a type that no host has taken yet (0: none waits; a job waiting out its retry backoff is not counted).
# TYPE conductor_queue_oldest_seconds gauge
conductor_queue_oldest_seconds{type="a"} ` + a + `
conductor_queue_oldest_seconds{type="b"} 0
conductor_queue_oldest_seconds{type="skewed"} 0
# HELP conductor_queue_oldest_error 1 if the oldest queued jobs could not be read from JetStream at this scrape (conductor_queue_oldest_seconds is then left out).
# TYPE conductor_queue_oldest_error gauge
conductor_queue_oldest_error ` + errGauge + `
`
	}
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want("90", "0")), "conductor_queue_oldest_seconds", "conductor_queue_oldest_error"))
	require.Equal(t, 7, limit)
	clk.add(500 * time.Millisecond)
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want("90.5", "0")), "conductor_queue_oldest_seconds", "conductor_queue_oldest_error"))
	require.EqualValues(t, 1, reads.Load(), "cached for a second")
	clk.add(500 * time.Millisecond)
	readErr = errors.New("timeout")
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP conductor_queue_oldest_error 1 if the oldest queued jobs could not be read from JetStream at this scrape (conductor_queue_oldest_seconds is then left out).
# TYPE conductor_queue_oldest_error gauge
conductor_queue_oldest_error 1
`), "conductor_queue_oldest_seconds", "conductor_queue_oldest_error"))
	require.EqualValues(t, 2, reads.Load())
	require.False(t, noDeadline.Load(), "a reading has a deadline")
}
