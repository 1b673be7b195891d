package metrics

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

func review16dCollector(hosts []client.Host) prometheus.Collector {
	return NewCollector(Source{
		Pools:   func(context.Context) ([]client.Pool, error) { return nil, nil },
		Workers: func() []client.Worker { return nil },
		Hosts:   func() []client.Host { return hosts },
	})
}

func review16dRunCount(t *testing.T, c prometheus.Collector) (uint64, []uint64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "conductor_job_run_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			var b []uint64
			for _, x := range h.GetBucket() {
				b = append(b, x.GetCumulativeCount())
			}
			return h.GetSampleCount(), b
		}
	}
	t.Fatal("no conductor_job_run_seconds")
	return 0, nil
}

// Found by an outside review: collectHistograms sums uint64 counts from the hosts'
// heartbeats with no overflow check: two hosts (or one whose counts are
// near the top, in a second bucket) wrap the sum, so the histogram of a
// type shows fewer observations than one host alone, and its cumulative
// buckets are not monotone. One bad heartbeat corrupts every host's
// numbers of that type (and rate() sees a reset).
func TestCollector_HistogramCountsDoNotWrap(t *testing.T) {
	t.Parallel()
	counts := func(i int, n uint64) []uint64 {
		c := make([]uint64, len(client.HistogramBounds)+1)
		c[i] = n
		return c
	}
	hosts := []client.Host{
		{Host: "h1", Pools: []client.HostPool{{Name: "p", Run: &client.Histogram{Counts: counts(0, 1000), Sum: 1}}}},
		{Host: "bad", Pools: []client.HostPool{{Name: "p", Run: &client.Histogram{Counts: counts(1, math.MaxUint64), Sum: 1}}}},
	}
	total, buckets := review16dRunCount(t, review16dCollector(hosts))
	for i := 1; i < len(buckets); i++ {
		require.GreaterOrEqual(t, buckets[i], buckets[i-1], "cumulative buckets not monotone: %v", buckets)
	}
	require.GreaterOrEqual(t, total, uint64(1000), "the summed count wrapped: %d", total)
}

// Found by an outside review: the type label of conductor_job_run_seconds and
// conductor_job_wait_seconds is a pool name taken from a host's heartbeat
// as is: no token check and no bound, unlike conductor_worker_counter's
// names (review 16c). One host names up to MaxHostPools (1,000) pools,
// any strings, and makes two histograms (15 series each) of every one.
func TestCollector_HistogramTypesAreTokens(t *testing.T) {
	t.Parallel()
	counts := make([]uint64, len(client.HistogramBounds)+1)
	counts[0] = 1
	var pools []client.HostPool
	for i := range 1000 {
		pools = append(pools, client.HostPool{Name: fmt.Sprintf("not a type \u00e9 %d", i),
			Run: &client.Histogram{Counts: counts}, Wait: &client.Histogram{Counts: counts}})
	}
	c := review16dCollector([]client.Host{{Host: "h1", Pools: pools}})
	n := testutil.CollectAndCount(c, "conductor_job_run_seconds")
	require.Zero(t, n, "pool names that are no job type made %d run histograms", n)
}
