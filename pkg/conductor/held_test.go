package conductor_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A job a host has fetched ahead and handed to no worker is held, not
// running and not queued, alike in GET /v1/pools, GET /v1/jobs (list and
// one job) and /metrics. Here a host's consumer has three jobs delivered
// and not acked; its heartbeat says it holds one of them.
func TestConductor_HeldJobsCountApart(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()

	var ids []string
	for i := range 5 {
		id, err := c.Client().Submit(ctx, "hold", i)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	space, err := subject.New("default")
	require.NoError(t, err)
	cons, err := bundle.js.CreateOrUpdateConsumer(ctx, space.JobStream(), jetstream.ConsumerConfig{
		Durable: space.Consumer("hold"), FilterSubject: space.JobAt("hold", ""), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	batch, err := cons.FetchNoWait(3)
	require.NoError(t, err)
	var delivered []string
	for m := range batch.Messages() {
		delivered = append(delivered, m.Headers().Get("Conductor-Job-Id"))
	}
	require.Len(t, delivered, 3)
	require.Equal(t, ids[:3], delivered, "the first three jobs are delivered")
	heldID := delivered[2]

	// The host's heartbeats, until the test ends.
	hbCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	hb, err := json.Marshal(wire.Heartbeat{
		Host: "hx", Interval: wire.Duration(100 * time.Millisecond),
		Pools: []wire.PoolInfo{{Name: "hold", Count: 2, Protocol: "channel", State: "running", Held: 1, HeldJobs: []string{heldID}}},
	})
	require.NoError(t, err)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = bundle.nc.Publish(space.Host("hx"), hb)
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	var pool client.Pool
	require.Eventually(t, func() bool {
		pools, err := c.Pools(ctx)
		require.NoError(t, err)
		for _, p := range pools {
			if p.Type == "hold" {
				pool = p
				return p.Held == 1
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the host's heartbeat counts one job held")
	require.Equal(t, int64(2), pool.Queued, "two jobs wait in the queue")
	require.Equal(t, int64(2), pool.Running, "three delivered, one of them held")
	require.Len(t, pool.Hosts, 1)
	require.Equal(t, 1, pool.Hosts[0].Held)

	// One job: held, by the host.
	code, body := get(t, srv, "/v1/jobs/"+heldID)
	require.Equal(t, http.StatusOK, code, body)
	var j client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &j))
	require.Equal(t, client.StatusHeld, j.Status)
	require.Equal(t, "hx", j.HeldBy)

	// The lists: held alone, queued alone (the held one left out), both.
	list := func(q string) []string {
		t.Helper()
		code, body := get(t, srv, "/v1/jobs?"+q)
		require.Equal(t, http.StatusOK, code, body)
		var jobs []client.Job
		require.NoError(t, json.Unmarshal([]byte(body), &jobs))
		var out []string
		for _, j := range jobs {
			out = append(out, string(j.Status)+":"+j.ID)
		}
		return out
	}
	require.Equal(t, []string{"held:" + heldID}, list("status=held"))
	queued := list("status=queued")
	require.Len(t, queued, 4, "every job but the held one: %v", queued)
	require.NotContains(t, queued, "queued:"+heldID)
	require.Len(t, list("status=queued,held&limit=2"), 2, "the limit holds")
	require.Contains(t, list(""), "held:"+heldID, "a list of every status shows it held")

	rec := httptest.NewRecorder()
	metrics.Handler(metrics.Source{Pools: c.Pools, Workers: c.Workers}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), `conductor_jobs{status="held",type="hold"} 1`)
	require.Contains(t, rec.Body.String(), `conductor_jobs{status="running",type="hold"} 2`)
}
