package flow_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/flow"
)

func TestAverage(t *testing.T) {
	t.Parallel()
	var a flow.Average
	require.Zero(t, a.Value(), "none yet")
	a.Add(0)
	require.EqualValues(t, 1, a.Value(), "a known average is never zero")
	a = flow.Average{}
	a.Add(800)
	require.EqualValues(t, 800, a.Value(), "the first value is the average")
	a.Add(0)
	require.EqualValues(t, 700, a.Value(), "each value weighs 1/8")
	for range 100 {
		a.Add(0)
	}
	require.EqualValues(t, 7, a.Value(), "a step under 1/8 of the average is lost to integer division")
	require.Equal(t, time.Duration(7), a.Duration())
}

// Short jobs are held ahead as many as the pool runs in HoldFor, within the
// per-worker prefetch, MaxHeldAhead and the bytes of payloads.
func TestAhead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		workers, perWorker int
		avgRun             time.Duration
		avgSize, holdBytes int
		want               int
	}{
		{"jobs not known short", 2, 8, 0, 0, 1000, 0},
		{"long jobs", 2, 8, flow.ShortJob, 10, 1000, 0},
		{"the prefetch", 2, 8, time.Millisecond, 10, 1000, 16},
		{"2 workers run 13 jobs of 15ms in 100ms", 2, 8, 15 * time.Millisecond, 10, 1000, 13},
		{"1000 bytes of 200-byte payloads", 2, 8, time.Millisecond, 200, 1000, 5},
		{"payloads over the bound", 2, 8, time.Millisecond, 2000, 1000, 0},
		{"size unknown", 2, 8, time.Millisecond, 0, 1000, 16},
		{"no prefetch", 2, 0, time.Millisecond, 10, 1000, 0},
		{"a large pool holds MaxHeldAhead at most", 256, 512, time.Microsecond, 10, flow.HoldBytes, flow.MaxHeldAhead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, flow.Ahead(tc.workers, tc.perWorker, tc.avgRun, tc.avgSize, tc.holdBytes))
		})
	}
}

func TestQueue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		prefetch int
		avgRun   time.Duration
		want     int
	}{
		{"unknown", 64, 0, 0},
		{"long", 64, flow.ShortJob, 0},
		{"what runs in ShortJob", 64, time.Millisecond, 20},
		{"within the prefetch", 8, time.Millisecond, 8},
		{"at least one", 64, 19 * time.Millisecond, 1},
		{"no prefetch", 0, time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, flow.Queue(tc.prefetch, tc.avgRun))
		})
	}
}
