package conductor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
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

// TestConductor_OldestQueuedSkipsTaken: a job a worker runs is not
// waiting; the oldest is the first not taken, of any priority, and none
// once every job is done.
func TestConductor_OldestQueuedSkipsTaken(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "job")
	require.NoError(t, syscall.Mkfifo(path+".released", 0o600))
	_, err := c.Client().Submit(ctx, "slow", "hold:"+path)
	require.NoError(t, err)
	startAgent(t, bundle, "slow") // one worker
	require.Eventually(t, func() bool {
		_, err := os.Stat(path + ".started")
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the held job did not start")

	before := time.Now()
	_, err = c.Client().Submit(ctx, "slow", 2, client.WithPriority(client.PriorityLow))
	require.NoError(t, err)
	_, err = c.Client().Submit(ctx, "slow", 3)
	require.NoError(t, err)
	after := time.Now()
	got, err := c.OldestQueued(ctx, 0)
	require.NoError(t, err)
	require.WithinRange(t, got["slow"], before, after, "the low job, the first not taken; not the running one")

	fifo, err := os.OpenFile(path+".released", os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fifo.Write([]byte{1})
	require.NoError(t, err)
	require.NoError(t, fifo.Close())
	require.Eventually(t, func() bool {
		got, err := c.OldestQueued(ctx, 0)
		require.NoError(t, err)
		at, ok := got["slow"]
		return ok && at.IsZero()
	}, 30*time.Second, 20*time.Millisecond, "jobs still waiting")
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
