package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

func TestCollector_Collect(t *testing.T) {
	t.Parallel()
	c := NewCollector(Source{
		Pools: func(context.Context) ([]client.Pool, error) {
			return []client.Pool{{Type: "squares", Queued: 3, Running: 1, Succeeded: 10, Failed: 2, Dead: 1, Workers: 2}}, nil
		},
		Workers: func() []client.Worker {
			return []client.Worker{{Host: "h1", Pool: "squares", Index: 0, RSS: 4096, JobsDone: 7, Restarts: 1}}
		},
	})
	want := `
# HELP conductor_jobs Jobs now queued or running, by type.
# TYPE conductor_jobs gauge
conductor_jobs{status="queued",type="squares"} 3
conductor_jobs{status="running",type="squares"} 1
# HELP conductor_worker_jobs_done_total Jobs a worker slot has finished.
# TYPE conductor_worker_jobs_done_total counter
conductor_worker_jobs_done_total{host="h1",index="0",pool="squares"} 7
# HELP conductor_scrape_error 1 if the job counts could not be read from JetStream at this scrape.
# TYPE conductor_scrape_error gauge
conductor_scrape_error 0
`
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want),
		"conductor_jobs", "conductor_worker_jobs_done_total", "conductor_scrape_error"))
	require.Equal(t, 10, testutil.CollectAndCount(c), "1 scrape gauge, 6 per pool, 3 per worker")
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
