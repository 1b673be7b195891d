package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

func TestCollector_Collect(t *testing.T) {
	t.Parallel()
	c := NewCollector(Source{
		Pools: func(context.Context) ([]client.Pool, error) {
			return []client.Pool{{Type: "squares", Queued: 3, Held: 5, Running: 1, Succeeded: 10, Failed: 2, Dead: 1, Superseded: 4, Workers: 2}}, nil
		},
		Workers: func() []client.Worker {
			return []client.Worker{
				{Host: "h1", Pool: "squares", Index: 0, RSS: 4096, JobsDone: 7, Restarts: 1, Counters: map[string]float64{"emails": 3}},
				{Host: "h2", Pool: "squares", Index: 0, RSS: 4096, JobsDone: 1, Counters: map[string]float64{"emails": 2, "bytes": 10}},
			}
		},
	})
	want := `
# HELP conductor_jobs Jobs now queued, held by a host (fetched ahead, not taken by a worker) or running, by type.
# TYPE conductor_jobs gauge
conductor_jobs{status="held",type="squares"} 5
conductor_jobs{status="queued",type="squares"} 3
conductor_jobs{status="running",type="squares"} 1
# HELP conductor_jobs_superseded_total Late outcomes not kept: attempts that ended after a newer attempt had taken their job, or after it had ended.
# TYPE conductor_jobs_superseded_total counter
conductor_jobs_superseded_total{type="squares"} 4
# HELP conductor_worker_jobs_done_total Jobs a worker slot has finished.
# TYPE conductor_worker_jobs_done_total counter
conductor_worker_jobs_done_total{host="h1",index="0",pool="squares"} 7
conductor_worker_jobs_done_total{host="h2",index="0",pool="squares"} 1
# HELP conductor_worker_counter What the workers of a pool counted (Job.Count, the count op; docs/stats.md), summed over its live workers, by counter (a gauge: a worker may count down, and a pool shrink).
# TYPE conductor_worker_counter gauge
conductor_worker_counter{counter="bytes",type="squares"} 10
conductor_worker_counter{counter="emails",type="squares"} 5
# HELP conductor_scrape_error 1 if the job counts could not be read from JetStream at this scrape.
# TYPE conductor_scrape_error gauge
conductor_scrape_error 0
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want),
		"conductor_jobs", "conductor_jobs_superseded_total", "conductor_worker_jobs_done_total", "conductor_worker_counter", "conductor_scrape_error"))
	require.Equal(t, 25, testutil.CollectAndCount(c), "1 scrape gauge, 9 per pool (the stall gauge), 3 per worker, 7 worker states per pool, 2 counters")
}

// TestCollector_States checks the state gauges: one series per known
// state, counting hosts and workers, and never a reason as a label.
func TestCollector_States(t *testing.T) {
	t.Parallel()
	c := NewCollector(Source{
		Pools: func(context.Context) ([]client.Pool, error) {
			return []client.Pool{{Type: "squares", State: "failed", Reason: "h1: crash loop", Hosts: []client.PoolHost{
				{Host: "h1", State: "failed", Reason: "crash loop: 5 failed starts within 10s"},
				{Host: "h2", State: "running"},
			}}}, nil
		},
		Workers: func() []client.Worker {
			return []client.Worker{
				{Host: "h1", Pool: "squares", Index: 0, State: "backoff", Reason: "exit 127"},
				{Host: "h1", Pool: "squares", Index: 1, State: "backoff", Reason: "exit 127"},
				{Host: "h2", Pool: "squares", Index: 0, State: "ready", PID: 12},
			}
		},
	})
	out, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, "conductor_pool_state", "conductor_workers")
	require.NoError(t, err)
	text := string(out)
	require.Contains(t, text, `conductor_pool_state{state="failed",type="squares"} 1`)
	require.Contains(t, text, `conductor_pool_state{state="running",type="squares"} 1`)
	require.Contains(t, text, `conductor_pool_state{state="backoff",type="squares"} 0`)
	require.Contains(t, text, `conductor_workers{state="backoff",type="squares"} 2`)
	require.Contains(t, text, `conductor_workers{state="ready",type="squares"} 1`)
	require.NotContains(t, text, "crash loop")
	require.NotContains(t, text, "exit 127")
}

func TestCollector_PoolsFail(t *testing.T) {
	t.Parallel()
	c := NewCollector(Source{
		Pools:   func(context.Context) ([]client.Pool, error) { return nil, errors.New("no JetStream") },
		Workers: func() []client.Worker { return nil },
	})
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP conductor_scrape_error 1 if the job counts could not be read from JetStream at this scrape.
# TYPE conductor_scrape_error gauge
conductor_scrape_error 1
`), "conductor_scrape_error"))
}

func TestCollector_Storage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		state   string
		healthy string
	}{{"ok", "1"}, {"degraded", "1"}, {"full", "0"}, {"failed", "0"}} {
		t.Run(tc.state, func(t *testing.T) {
			c := NewCollector(Source{
				Pools:   func(context.Context) ([]client.Pool, error) { return nil, nil },
				Workers: func() []client.Worker { return nil },
				Storage: func() Storage {
					return Storage{State: tc.state, FreeBytes: 100, ReserveBytes: 50, BallastBytes: 12, DrainBytesPerJob: 4096, WriteErrors: 2, Restarts: 1, LostMessages: 3}
				},
			})
			var states strings.Builder
			for _, st := range StorageStates {
				v := "0"
				if st == tc.state {
					v = "1"
				}
				states.WriteString("conductor_storage_state{state=\"" + st + "\"} " + v + "\n")
			}
			want := `
# HELP conductor_storage_healthy 1 if the store takes new jobs and job states, 0 if it is full (new jobs refused) or failed (no writes).
# TYPE conductor_storage_healthy gauge
conductor_storage_healthy ` + tc.healthy + `
# HELP conductor_storage_state 1 for the store's state now: ok, degraded (messages were lost at a start), full or failed.
# TYPE conductor_storage_state gauge
` + states.String() + `# HELP conductor_storage_write_errors_total Times the store stopped taking writes after an error (or JetStream was disabled) since conductord started.
# TYPE conductor_storage_write_errors_total counter
conductor_storage_write_errors_total 2
# HELP conductor_storage_lost_messages Messages found lost in the store at a start and not yet cleared (docs/reliability.md).
# TYPE conductor_storage_lost_messages gauge
conductor_storage_lost_messages 3
# HELP conductor_storage_drain_bytes_per_job Bytes kept free for each job queued: what its queued state and its drain are estimated to write.
# TYPE conductor_storage_drain_bytes_per_job gauge
conductor_storage_drain_bytes_per_job 4096
`
			require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want),
				"conductor_storage_healthy", "conductor_storage_state", "conductor_storage_write_errors_total", "conductor_storage_lost_messages",
				"conductor_storage_drain_bytes_per_job"))
			require.Equal(t, 1+1+4+7, testutil.CollectAndCount(c), "scrape error, healthy, 4 states, 7 others")
		})
	}
}

func TestCollector_Strays(t *testing.T) {
	t.Parallel()
	c := NewCollector(Source{
		Pools:   func(context.Context) ([]client.Pool, error) { return nil, nil },
		Workers: func() []client.Worker { return nil },
		Strays:  func() Strays { return Strays{Deleted: 180, Requeued: 2} },
	})
	want := `
# HELP conductor_jobs_stray_messages_total Job messages found in the job stream after their consumer had acked past them (a server crash brings them back; docs/reliability.md), since conductord started: deleted (the job had ended) or requeued (published again).
# TYPE conductor_jobs_stray_messages_total counter
conductor_jobs_stray_messages_total{action="deleted"} 180
conductor_jobs_stray_messages_total{action="requeued"} 2
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want), "conductor_jobs_stray_messages_total"))
}

func TestCollector_HeartbeatsDropped(t *testing.T) {
	t.Parallel()
	c := NewCollector(Source{
		Pools:      func(context.Context) ([]client.Pool, error) { return nil, nil },
		Workers:    func() []client.Worker { return nil },
		Heartbeats: func() HeartbeatDrops { return HeartbeatDrops{Full: 500, Oversize: 3, Malformed: 7} },
	})
	want := `
# HELP conductor_heartbeats_dropped_total Hosts' heartbeats dropped since conductord started (docs/security.md, "Bounded inputs"): full (the registry at its bound of hosts or bytes), oversize, malformed.
# TYPE conductor_heartbeats_dropped_total counter
conductor_heartbeats_dropped_total{reason="full"} 500
conductor_heartbeats_dropped_total{reason="malformed"} 7
conductor_heartbeats_dropped_total{reason="oversize"} 3
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want), "conductor_heartbeats_dropped_total"))
}

// The hosts' run and wait histograms are summed by type into Prometheus
// histograms; one of other buckets is left out.
func TestCollector_Histograms(t *testing.T) {
	t.Parallel()
	counts := func(at map[int]uint64) []uint64 {
		c := make([]uint64, len(client.HistogramBounds)+1)
		for i, n := range at {
			c[i] = n
		}
		return c
	}
	c := NewCollector(Source{
		Pools:   func(context.Context) ([]client.Pool, error) { return nil, nil },
		Workers: func() []client.Worker { return nil },
		Hosts: func() []client.Host {
			return []client.Host{
				{Host: "h1", Lookups: &client.Histogram{Counts: counts(map[int]uint64{1: 2}), Sum: 0.004}, Pools: []client.HostPool{{Name: "squares",
					Run:  &client.Histogram{Counts: counts(map[int]uint64{0: 3, 6: 1}), Sum: 1.002},
					Wait: &client.Histogram{Counts: counts(map[int]uint64{2: 4}), Sum: 0.03}}}},
				{Host: "h2", Pools: []client.HostPool{{Name: "squares",
					Run: &client.Histogram{Counts: counts(map[int]uint64{13: 1}), Sum: 700}}}},
				{Host: "h3", Pools: []client.HostPool{{Name: "squares",
					Run: &client.Histogram{Counts: []uint64{9}, Sum: 9}}}}, // other buckets
			}
		},
	})
	want := `
# HELP conductor_job_run_seconds How long attempts ran on a worker, by type, summed over the live hosts since each's workerd started.
# TYPE conductor_job_run_seconds histogram
conductor_job_run_seconds_bucket{type="squares",le="0.001"} 3
conductor_job_run_seconds_bucket{type="squares",le="0.005"} 3
conductor_job_run_seconds_bucket{type="squares",le="0.01"} 3
conductor_job_run_seconds_bucket{type="squares",le="0.05"} 3
conductor_job_run_seconds_bucket{type="squares",le="0.1"} 3
conductor_job_run_seconds_bucket{type="squares",le="0.5"} 3
conductor_job_run_seconds_bucket{type="squares",le="1"} 4
conductor_job_run_seconds_bucket{type="squares",le="5"} 4
conductor_job_run_seconds_bucket{type="squares",le="10"} 4
conductor_job_run_seconds_bucket{type="squares",le="30"} 4
conductor_job_run_seconds_bucket{type="squares",le="60"} 4
conductor_job_run_seconds_bucket{type="squares",le="300"} 4
conductor_job_run_seconds_bucket{type="squares",le="600"} 4
conductor_job_run_seconds_bucket{type="squares",le="+Inf"} 5
conductor_job_run_seconds_sum{type="squares"} 701.002
conductor_job_run_seconds_count{type="squares"} 5
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want), "conductor_job_run_seconds"))
	require.Equal(t, 2+1+1+1, testutil.CollectAndCount(c), "run and wait of squares, the lookups, the scrape gauge and the host count")
	require.Equal(t, 1, testutil.CollectAndCount(c, "conductor_lookup_seconds"))
}
