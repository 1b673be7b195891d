package conductor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestAttack18_EndsFeed_FollowerWaitsWoken: a wait through a conductord
// that does not lead is woken by the end as it passes (endsfeed.go), not
// left to its recheck (client.Config.RecheckInterval, 2s): each of 20
// jobs, one after another, ends well within a recheck; and again after
// the leader stops and the follower has become the leader (its ends feed
// off, its ends taker waking the waits), and the stopped one is replaced
// by a new follower.
func TestAttack18_EndsFeed_FollowerWaitsWoken(t *testing.T) {
	t.Parallel()
	bundle, url := attack18Bundle(t)
	cfg := conductor.Config{LeaderLease: 300 * time.Millisecond}
	a := attack18Start(t, url, "", cfg)
	b := attack18Start(t, url, "", cfg)
	startAgentN(t, bundle, 2, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	waits := func(via *conductor.Conductor) {
		t.Helper()
		require.False(t, via.Leader().Leading, "through a follower")
		for i := range 20 {
			began := time.Now()
			j, err := via.Client().SubmitAndWait(ctx, "squares", i)
			require.NoError(t, err)
			require.Equal(t, client.StatusSucceeded, j.Status)
			took := time.Since(began)
			require.Less(t, took, time.Second, "job %d's wait woken at its recheck, not by its end", i)
		}
	}
	leader := leaderOf(t, 5*time.Second, a, b)
	follower := a
	if leader == a {
		follower = b
	}
	waits(follower)

	leader.Stop()
	leaderOf(t, 5*time.Second, follower)
	c := attack18Start(t, url, "", cfg)
	require.Eventually(t, func() bool { return c.Leader().Members == 2 && c.Leader().Leader == follower.Leader().Conductord },
		5*time.Second, 10*time.Millisecond, "the newcomer follows")
	waits(c)
}
