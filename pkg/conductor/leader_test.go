package conductor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// startOnCluster starts a conductor on the cluster at urls with cfg.
func startOnCluster(t *testing.T, urls string, cfg conductor.Config) *conductor.Conductor {
	t.Helper()
	cfg.NATSURL, cfg.DataDir = urls, t.TempDir()
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	return c
}

// leaderOf waits until exactly one of cs leads, and returns it.
func leaderOf(t *testing.T, within time.Duration, cs ...*conductor.Conductor) *conductor.Conductor {
	t.Helper()
	var leader *conductor.Conductor
	require.Eventually(t, func() bool {
		leader = nil
		n := 0
		for _, c := range cs {
			if c.Leader().Leading {
				leader = c
				n++
			}
		}
		return n == 1
	}, within, 5*time.Millisecond, "one leader among %d conductords", len(cs))
	return leader
}

// succeeded returns the succeeded count c reports for typ.
func succeeded(ctx context.Context, c *conductor.Conductor, typ string) uint64 {
	pools, err := c.Pools(ctx)
	if err != nil {
		return 0
	}
	for _, p := range pools {
		if p.Type == typ {
			return p.Succeeded
		}
	}
	return 0
}

// submitThrough runs n jobs of squares, alternately through each of cs,
// 8 at a time, and checks that each succeeded after one attempt.
func submitThrough(t *testing.T, ctx context.Context, n int, cs ...*conductor.Conductor) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			j, err := cs[i%len(cs)].Client().SubmitAndWait(ctx, "squares", i)
			switch {
			case err != nil:
				errs <- err
			case j.Status != client.StatusSucceeded || len(j.History) != 1:
				errs <- fmt.Errorf("job %s: %s after %d attempts: %+v", j.ID, j.Status, len(j.History), j.History)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// TestLeader_TwoConductorsOneNamespace: two conductords on one cluster
// both take submissions and answer waits; one leads; the job counts are
// counted once (each reports the leader's); when the leader stops, the
// other leads within its lease and the counts go on from where they were.
func TestLeader_TwoConductorsOneNamespace(t *testing.T) {
	t.Parallel()
	bundle, urls := clusterBundle(t)
	cfg := conductor.Config{LeaderLease: time.Second}
	a := startOnCluster(t, urls, cfg)
	b := startOnCluster(t, urls, cfg)
	startAgentN(t, bundle, 2, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	leader := leaderOf(t, 5*time.Second, a, b)
	other := a
	if leader == a {
		other = b
	}
	require.Eventually(t, func() bool { return a.Leader().Members == 2 && b.Leader().Members == 2 },
		5*time.Second, 10*time.Millisecond, "each counts both")
	require.Equal(t, leader.Leader().Conductord, other.Leader().Leader, "the follower names the leader")

	submitThrough(t, ctx, 100, a, b)
	for _, c := range []*conductor.Conductor{a, b} {
		require.Eventually(t, func() bool { return succeeded(ctx, c, "squares") == 100 },
			10*time.Second, 20*time.Millisecond, "100 counted once, as each conductord reports")
	}

	// The leader stops: it gives the lease up, the other takes it within
	// a third of the lease (and its ticks), not a whole lease.
	began := time.Now()
	leader.Stop()
	require.Equal(t, other, leaderOf(t, 3*time.Second, other))
	t.Logf("fail-over after a stop: %s (lease %s)", time.Since(began).Round(time.Millisecond), cfg.LeaderLease)
	submitThrough(t, ctx, 50, other)
	require.Eventually(t, func() bool { return succeeded(ctx, other, "squares") == 150 },
		10*time.Second, 20*time.Millisecond, "the counts go on from the first leader's")
}

// TestLeader_Restart: a conductord started again on its data directory
// takes its own lease back at once, without waiting for it to expire.
func TestLeader_Restart(t *testing.T) {
	t.Parallel()
	bundle, urls := clusterBundle(t)
	dir := t.TempDir()
	cfg := conductor.Config{NATSURL: urls, DataDir: dir, LeaderLease: time.Minute}
	first, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, first.Start(context.Background()))
	leaderOf(t, 5*time.Second, first)
	id := first.Leader().Conductord
	first.Stop()
	// As a kill would leave it: the lease held, a minute to run.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	space, _ := subject.New("default")
	kv, err := bundle.js.KeyValue(ctx, space.LeaderBucket())
	require.NoError(t, err)
	// The lease value is the id and a token of the run, which the data
	// directory keeps for the next run.
	run, err := os.ReadFile(filepath.Join(dir, "conductord.run"))
	require.NoError(t, err)
	require.Contains(t, string(run), id+"/")
	_, err = kv.Put(ctx, subject.LeaderKey, bytes.TrimSpace(run))
	require.NoError(t, err)

	again, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, again.Start(context.Background()))
	t.Cleanup(again.Stop)
	require.Equal(t, id, again.Leader().Conductord, "the same id, kept in the data directory")
	leaderOf(t, 5*time.Second, again) // far less than the minute's lease
}

// TestLeader_BadLease: a lease out of bounds is refused, naming the flag.
func TestLeader_BadLease(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{time.Millisecond, 2 * time.Minute, -time.Second} {
		_, err := conductor.New(conductor.Config{LeaderLease: d, DataDir: t.TempDir()})
		require.ErrorContains(t, err, "--leader-lease", "%s", d)
	}
}

// TestLeader_ArchiveSharedByPeers: each conductord archives what it took
// (the ends as leader, the final states its hosts' store wrote); a job
// gone from the state bucket is read through either, whichever archived
// it, and an unknown job is not found at once, not after a wait.
func TestLeader_ArchiveSharedByPeers(t *testing.T) {
	t.Parallel()
	bundle, urls := clusterBundle(t)
	cfg := conductor.Config{LeaderLease: time.Second, ArchiveAfter: time.Second}
	a := startOnCluster(t, urls, cfg)
	b := startOnCluster(t, urls, cfg)
	startAgentN(t, bundle, 2, "squares")
	leaderOf(t, 5*time.Second, a, b)
	require.Eventually(t, func() bool { return a.Leader().Members == 2 && b.Leader().Members == 2 },
		5*time.Second, 10*time.Millisecond, "each counts both")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ids []string
	for i := range 20 {
		j, err := []*conductor.Conductor{a, b}[i%2].Client().SubmitAndWait(ctx, "squares", i)
		require.NoError(t, err)
		ids = append(ids, j.ID)
	}
	space, _ := subject.New("default")
	kv, err := bundle.js.KeyValue(ctx, space.StateBucket())
	require.NoError(t, err)
	for _, id := range ids {
		require.Eventually(t, func() bool {
			_, err := kv.Get(ctx, id)
			return errors.Is(err, jetstream.ErrKeyNotFound)
		}, 20*time.Second, 50*time.Millisecond, "the final state of %s leaves the bucket", id)
	}
	for _, c := range []*conductor.Conductor{a, b} {
		for i, id := range ids {
			j, err := c.Client().Job(ctx, id)
			require.NoError(t, err, "job %s from the archives", id)
			require.Equal(t, client.StatusSucceeded, j.Status)
			require.JSONEq(t, fmt.Sprint(i*i), string(j.Result))
		}
		began := time.Now()
		_, err := c.Client().Job(ctx, "no-such-job")
		require.ErrorIs(t, err, client.ErrJobNotFound)
		require.Less(t, time.Since(began), 500*time.Millisecond, "every peer said no at once")
	}
}
