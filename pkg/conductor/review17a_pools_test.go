package conductor_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestKnownGap_JobsOfAGoneHostCountAsRunning pins a gap: the jobs
// delivered to a host that is gone (killed, or stopped and given back
// with a nak) stay pending on the type's consumer until a host pulls
// again, and GET /v1/pools counts every pending job not held as running.
// With no live host of the type they read running forever: queued 0,
// conductor_queue_oldest_seconds 0 (nothing past the consumer's
// delivered sequence) and conductor_queue_stalled 0 (it watches queued
// and held), so neither alert fires while nothing runs them. What is
// wrong: running should be what the live hosts' workers run (their
// heartbeats), the rest of the pending jobs queued (less those waiting
// out a retry backoff, which the consumer does not tell apart: the
// states do), and their age counted. This test fails once that is done.
func TestKnownGap_JobsOfAGoneHostCountAsRunning(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	before := time.Now()
	for i := range 3 {
		_, err := c.Client().Submit(ctx, "gone", i)
		require.NoError(t, err)
	}
	space, _ := subject.New("default")
	cons, err := bundle.js.CreateOrUpdateConsumer(ctx, space.JobStream(), jetstream.ConsumerConfig{
		Durable: space.Consumer("gone"), FilterSubject: space.JobAt("gone", ""), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	batch, err := cons.FetchNoWait(3)
	require.NoError(t, err)
	n := 0
	for range batch.Messages() {
		n++ // taken by a host that is gone: no heartbeat, no ack
	}
	require.Equal(t, 3, n)

	hosts, err := c.Client().Hosts(ctx)
	require.NoError(t, err)
	require.Empty(t, hosts, "no live host")
	pools, err := c.Pools(ctx)
	require.NoError(t, err)
	require.Len(t, pools, 1)
	require.Equal(t, int64(0), pools[0].Queued, "gap: the three jobs nobody runs are not queued")
	require.Equal(t, int64(3), pools[0].Running, "gap: they read running, with no live host")
	oldest, err := c.OldestQueued(ctx, 0)
	require.NoError(t, err)
	require.Contains(t, oldest, "gone")
	require.True(t, oldest["gone"].IsZero(), "gap: none reads waiting; the oldest was queued at %v", before)
}

// TestReview17a_HeartbeatOfOtherTypesPool: a host credential of type
// squares whose heartbeat says it runs pool other, with a worker and jobs
// held, is not counted in other's pool: its heartbeat made other's
// workers, hosts, state and held jobs (a running job shown held) whatever
// it said, in GET /v1/pools, the console and /metrics.
func TestReview17a_HeartbeatOfOtherTypesPool(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	h1, _ := rc.connectAs(t, "h1")
	space, _ := subject.New("default")
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: "h1", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
		Pools: []wire.PoolInfo{
			{Name: "squares", Count: 1, Protocol: "channel", State: "running"},
			{Name: "other", Count: 1, Protocol: "channel", State: "failed", Error: "forged by h1", Held: 3},
		},
		Workers: []wire.WorkerInfo{
			{Host: "h1", Pool: "squares", Index: 0, PID: 10, State: "ready"},
			{Host: "h1", Pool: "other", Index: 0, PID: 11, State: "backoff", Reason: "forged by h1"},
		},
	})
	require.NoError(t, h1.Publish(space.Host("h1"), hb))
	require.NoError(t, h1.Flush())
	require.Eventually(t, func() bool { return len(rc.c.Workers()) > 0 }, 20*time.Second, 20*time.Millisecond, "h1 is live")

	pools, err := rc.c.Pools(context.Background())
	require.NoError(t, err)
	for _, p := range pools {
		if p.Type == "other" {
			require.Empty(t, p.Hosts, "h1, of type squares, listed in pool other: %+v", p)
			require.Zero(t, p.Workers)
		}
	}
	for _, w := range rc.c.Workers() {
		require.Equal(t, "squares", w.Pool, "h1's worker of pool other listed")
	}
}

// TestKnownGap_DelayedJobCountsAsRunning pins the same gap from its
// other side: a delayed job a host took before its time is put back
// with a nak delayed to its time, and stays pending on the consumer, so
// GET /v1/pools counts it running, with no worker at it, for the whole
// delay (a job waiting out its retry backoff too). What is wrong and
// what would fix it: see TestKnownGap_JobsOfAGoneHostCountAsRunning.
func TestKnownGap_DelayedJobCountsAsRunning(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	_, err := c.Client().Submit(ctx, "later", 1, client.WithDelay(time.Hour))
	require.NoError(t, err)
	startAgent(t, bundle, "later")
	require.Eventually(t, func() bool {
		pools, err := c.Pools(ctx)
		require.NoError(t, err)
		return len(pools) == 1 && pools[0].Running == 1 && pools[0].Queued == 0
	}, 20*time.Second, 20*time.Millisecond, "the host took the delayed job and put it back")
	for _, w := range c.Workers() {
		require.Empty(t, w.Job, "no worker runs it")
	}
	pools, err := c.Pools(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), pools[0].Running, "gap: a job due in an hour reads running")
}

// TestReview17a_PoolCommandOfOtherTypesHost: a pool command through
// conductord reports the answers of the hosts of the pool's type only.
// The Client sends it to every host whose heartbeat names the pool: h1,
// of type squares, that says it runs pool other and answers a drain of
// it as done, had its answer reported, and the drain shown accepted
// (202) though no host of type other took it.
func TestReview17a_PoolCommandOfOtherTypesHost(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	h1, _ := rc.connectAs(t, "h1")
	space, _ := subject.New("default")
	_, err := h1.Subscribe(space.Control("h1"), func(m *nats.Msg) {
		data, _ := json.Marshal(wire.CommandReply{Host: "h1", Pool: "other", OK: true})
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: "h1", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
		Pools: []wire.PoolInfo{{Name: "other", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
	})
	require.Eventually(t, func() bool {
		_ = h1.Publish(space.Host("h1"), hb)
		return len(rc.c.Client().HeardHosts()) > 0
	}, 20*time.Second, 50*time.Millisecond, "h1 is heard")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/pools/other/drain", nil)
	req.Header.Set("Authorization", "Bearer "+rc.tokens["ops"])
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	code := resp.StatusCode
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusNotFound, code, "no host of type other: %s", body)
	require.NotContains(t, string(body), `"host":"h1"`)
}
