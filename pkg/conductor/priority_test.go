package conductor_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

func TestClient_Priorities(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)

	// Queued before any worker exists: low first, high last.
	var ids []string
	for _, p := range []client.Priority{client.PriorityLow, client.PriorityNormal, client.PriorityHigh} {
		for i := range 3 {
			id, err := c.Client().Submit(ctx, "prio", i, client.WithPriority(p))
			require.NoError(t, err)
			ids = append(ids, id)
		}
	}
	j, err := c.Client().Job(ctx, ids[8])
	require.NoError(t, err)
	require.Equal(t, client.PriorityHigh, j.Priority)
	j, err = c.Client().Job(ctx, ids[3])
	require.NoError(t, err)
	require.Empty(t, j.Priority, "a normal job shows no priority")

	pools, err := c.Pools(ctx)
	require.NoError(t, err)
	require.Len(t, pools, 1)
	require.Equal(t, int64(9), pools[0].Queued)
	require.Equal(t, map[client.Priority]int64{"high": 3, "normal": 3, "low": 3}, pools[0].QueuedByPriority)

	code, body := post(t, srv, "/v1/jobs/prio?priority=urgent", "1")
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, "want high, normal or low")
	_, err = c.Client().Submit(ctx, "prio", 1, client.WithPriority("urgent"))
	require.ErrorContains(t, err, "bad priority")

	// One worker runs them: every high job before any normal one, every
	// normal one before any low one.
	startAgent(t, bundle, "prio")
	started := map[string]time.Time{}
	for _, id := range ids {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		j, err := c.Client().Wait(wctx, id)
		cancel()
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status)
		started[id] = j.History[len(j.History)-1].StartedAt
	}
	order := slices.Clone(ids)
	slices.SortFunc(order, func(a, b string) int { return started[a].Compare(started[b]) })
	want := append(slices.Clone(ids[6:9]), ids[3:6]...)
	want = append(want, ids[0:3]...)
	require.Equal(t, want, order)
}

// TestConductor_PriorityConsumersMadeAsJobsCome: a served type that has
// had only normal jobs costs the job stream one consumer; its first high
// job gets its consumer from the leader, and runs, within a few seconds;
// no low job came, so no low consumer is made.
func TestConductor_PriorityConsumersMadeAsJobsCome(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	startAgent(t, bundle, "lazy")
	consumers := func() []string {
		stream, err := bundle.js.Stream(ctx, "conductor-default-jobs")
		require.NoError(t, err)
		var names []string
		for name := range stream.ListConsumers(ctx).Info() {
			names = append(names, name.Name)
		}
		slices.Sort(names)
		return names
	}
	wait := func(id string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		j, err := c.Client().Wait(wctx, id)
		require.NoError(t, err)
		require.Equal(t, client.StatusSucceeded, j.Status)
	}
	id, err := c.Client().Submit(ctx, "lazy", 1)
	require.NoError(t, err)
	wait(id)
	require.Equal(t, []string{"pool-lazy"}, consumers(), "normal jobs only: one consumer")

	start := time.Now()
	id, err = c.Client().Submit(ctx, "lazy", 2, client.WithPriority(client.PriorityHigh))
	require.NoError(t, err)
	wait(id)
	t.Logf("the first high job ran %s after it was queued", time.Since(start))
	require.Equal(t, []string{"high-lazy", "pool-lazy"}, consumers())
}
