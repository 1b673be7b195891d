package conductor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestConductor_OldestQueued: the time of each type's oldest job not
// taken, in name order within the limit; the oldest of any priority.
func TestConductor_OldestQueued(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{})
	ctx := context.Background()
	before := time.Now()
	_, err := c.Client().Submit(ctx, "b", 1)
	require.NoError(t, err)
	mid := time.Now()
	_, err = c.Client().Submit(ctx, "a", 1)
	require.NoError(t, err)
	_, err = c.Client().Submit(ctx, "b", 2)
	require.NoError(t, err)

	got, err := c.OldestQueued(ctx, 0)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.WithinRange(t, got["b"], before.Add(-time.Second), mid.Add(time.Second))
	require.True(t, got["b"].Before(got["a"]) || got["b"].Equal(got["a"]), "b's first job is the older")

	got, err = c.OldestQueued(ctx, 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Contains(t, got, "a", "the first in name order")
}

// BenchmarkConductor_OldestQueued measures a reading of the oldest job of
// each of 100 types, each with jobs queued and no pool: the cost of one
// scrape's conductor_queue_oldest_seconds, uncached.
func BenchmarkConductor_OldestQueued(b *testing.B) {
	for _, types := range []int{1, 100} {
		b.Run(fmt.Sprintf("types=%d", types), func(b *testing.B) {
			c, err := conductor.New(conductor.Config{DataDir: b.TempDir(), NATSListen: "127.0.0.1:0"})
			require.NoError(b, err)
			require.NoError(b, c.Start(context.Background()))
			defer c.Stop()
			ctx := context.Background()
			for i := range types {
				for j := range 3 {
					_, err := c.Client().Submit(ctx, fmt.Sprintf("t%03d", i), j)
					require.NoError(b, err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				got, err := c.OldestQueued(ctx, 0)
				if err != nil || len(got) != types {
					b.Fatal(len(got), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(types), "µs/type")
		})
	}
}
