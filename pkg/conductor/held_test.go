package conductor_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
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
	h := holdJobs(t, 5, 3)
	c, srv, ctx := h.c, h.srv, context.Background()
	heldID := h.delivered[2]
	h.heartbeat(t, heldID)

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
	require.Equal(t, []string{"held:" + heldID}, h.list(t, "status=held"))
	queued := h.list(t, "status=queued")
	require.Len(t, queued, 4, "every job but the held one: %v", queued)
	require.NotContains(t, queued, "queued:"+heldID)
	require.Len(t, h.list(t, "status=queued,held&limit=2"), 2, "the limit holds")
	require.Contains(t, h.list(t, ""), "held:"+heldID, "a list of every status shows it held")

	rec := httptest.NewRecorder()
	metrics.Handler(metrics.Source{Pools: c.Pools, Workers: c.Workers}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, rec.Body.String(), `conductor_jobs{status="held",type="hold"} 1`)
	require.Contains(t, rec.Body.String(), `conductor_jobs{status="running",type="hold"} 2`)
}

// A host fetches the oldest queued jobs first, so the jobs it holds are the
// oldest queued ones, past the newest that a listing's pass keeps: GET
// /v1/jobs?status=held reads them by id.
func TestConductor_HeldListWithBacklog(t *testing.T) {
	t.Parallel()
	h := holdJobs(t, 30, 2)
	heldID := h.delivered[1]
	h.heartbeat(t, heldID)
	require.Eventually(t, func() bool {
		code, body := get(t, h.srv, "/v1/jobs/"+heldID)
		return code == http.StatusOK && strings.Contains(body, `"held"`)
	}, 10*time.Second, 20*time.Millisecond, "the job reads held on its own")
	require.Equal(t, []string{"held:" + heldID}, h.list(t, "status=held&limit=5"), "the one held job is listed (30 queued, limit 5)")
}

// heldFixture is a conductor with jobs of type hold queued, the first of
// them delivered to a consumer of the type and not acked.
type heldFixture struct {
	c         *conductor.Conductor
	bundle    *testBundle
	srv       *httptest.Server
	space     subject.Space
	delivered []string // the ids of the jobs delivered, oldest first
}

// holdJobs queues n jobs of type hold and has the type's consumer deliver
// the oldest fetch of them.
func holdJobs(t *testing.T, n, fetch int) *heldFixture {
	t.Helper()
	c, bundle := setup(t, conductor.Config{})
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	ctx := context.Background()
	var ids []string
	for i := range n {
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
	batch, err := cons.FetchNoWait(fetch)
	require.NoError(t, err)
	h := &heldFixture{c: c, bundle: bundle, srv: srv, space: space}
	for m := range batch.Messages() {
		h.delivered = append(h.delivered, m.Headers().Get("Conductor-Job-Id"))
	}
	require.Equal(t, ids[:fetch], h.delivered, "the oldest jobs are delivered first")
	return h
}

// heartbeat announces host hx, which holds job held, until the test ends.
func (h *heldFixture) heartbeat(t *testing.T, held string) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	hb, err := json.Marshal(wire.Heartbeat{
		Host: "hx", Interval: wire.Duration(100 * time.Millisecond),
		Pools: []wire.PoolInfo{{Name: "hold", Count: 2, Protocol: "channel", State: "running", Held: 1, HeldJobs: []string{held}}},
	})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = h.bundle.nc.Publish(h.space.Host("hx"), hb)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
}

// list lists jobs with GET /v1/jobs?query, as "status:id".
func (h *heldFixture) list(t *testing.T, query string) []string {
	t.Helper()
	code, body := get(t, h.srv, "/v1/jobs?"+query)
	require.Equal(t, http.StatusOK, code, body)
	var jobs []client.Job
	require.NoError(t, json.Unmarshal([]byte(body), &jobs))
	var out []string
	for _, j := range jobs {
		out = append(out, string(j.Status)+":"+j.ID)
	}
	return out
}
