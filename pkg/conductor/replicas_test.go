package conductor_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// setupCluster starts a 3-server JetStream cluster and a conductor on it
// with cfg (NATSURL: the three URLs, comma-separated), and returns the
// conductor and a bundle connected to the cluster.
func setupCluster(t *testing.T, cfg conductor.Config) (*conductor.Conductor, *testBundle) {
	t.Helper()
	bundle, urls := clusterBundle(t)
	cfg.NATSURL, cfg.DataDir = urls, t.TempDir()
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	return c, bundle
}

// clusterBundle starts a 3-server JetStream cluster and returns a bundle
// connected to it and its URLs, comma-separated.
func clusterBundle(t *testing.T) (*testBundle, string) {
	t.Helper()
	urls := natstest.URLs(natstest.Cluster(t, 3))
	nc, err := nats.Connect(urls)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return &testBundle{nc: nc, js: js}, urls
}

// requireReplicas checks that every stream of the account (the
// conductor's streams and its buckets' streams) has want replicas, and,
// on a cluster, that the cluster placed them: a leader and want-1
// followers.
func requireReplicas(t *testing.T, js jetstream.JetStream, want int, clustered bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	space, _ := subject.New("default")
	seen := map[string]bool{}
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		seen[info.Config.Name] = true
		require.Equal(t, want, info.Config.Replicas, "stream %s", info.Config.Name)
		if !clustered {
			continue
		}
		require.NotNil(t, info.Cluster, "stream %s", info.Config.Name)
		require.NotEmpty(t, info.Cluster.Leader, "stream %s", info.Config.Name)
		require.Len(t, info.Cluster.Replicas, want-1, "stream %s", info.Config.Name)
	}
	require.NoError(t, streams.Err())
	for _, name := range []string{
		space.JobStream(), space.EndsStream(),
		"KV_" + space.StateBucket(), "KV_" + space.BatchBucket(), "KV_" + space.CancelBucket(),
		"KV_" + space.DeadBucket(), "KV_" + space.StatsBucket(), "KV_" + space.LookupBucket(),
	} {
		require.True(t, seen[name], "stream %s made; saw %v", name, seen)
	}
}

// TestConductor_ReplicasOnCluster: on a 3-server JetStream cluster,
// every stream and bucket is R3 by default (R1 when Replicas says 1),
// and a job runs through a workerd agent on the cluster.
func TestConductor_ReplicasOnCluster(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		replicas int
		want     int
	}{
		{"default", 0, 3},
		{"one", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, bundle := setupCluster(t, conductor.Config{Replicas: tc.replicas})
			requireReplicas(t, bundle.js, tc.want, true)

			startAgent(t, bundle, "squares")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			id, err := c.Client().Submit(ctx, "squares", 7)
			require.NoError(t, err)
			j, err := c.Client().Wait(ctx, id)
			require.NoError(t, err)
			require.Equal(t, client.StatusSucceeded, j.Status)
			require.JSONEq(t, "49", string(j.Result))
		})
	}
}

// TestConductor_ReplicasEmbeddedDefault: the embedded server keeps one
// copy of every stream and bucket.
func TestConductor_ReplicasEmbeddedDefault(t *testing.T) {
	t.Parallel()
	_, bundle := setup(t, conductor.Config{})
	requireReplicas(t, bundle.js, 1, false)
}

// TestConductor_ReplicasAutoOnSingleServer: with NATSURL to a server not
// in a cluster, the default is one copy: the server refuses three, and
// the conductor takes one.
func TestConductor_ReplicasAutoOnSingleServer(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	c, err := conductor.New(conductor.Config{NATSURL: ns.ClientURL(), DataDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	js, err := jetstream.New(natstest.Conn(t, ns))
	require.NoError(t, err)
	requireReplicas(t, js, 1, false)
}

// TestConductor_ReplicasUnplaceable: 5 replicas on 3 servers fail Start
// with ErrReplicas, naming --replicas.
func TestConductor_ReplicasUnplaceable(t *testing.T) {
	t.Parallel()
	_, urls := clusterBundle(t)
	c, err := conductor.New(conductor.Config{NATSURL: urls, DataDir: t.TempDir(), Replicas: 5})
	require.NoError(t, err)
	err = c.Start(context.Background())
	require.ErrorIs(t, err, conductor.ErrReplicas)
	require.ErrorContains(t, err, "--replicas")
	require.ErrorContains(t, err, "5 replicas")
	t.Log(err)
}

// TestConductor_ReplicasChangeOnRestart: a conductor restarted with
// another replica count updates every stream and bucket to it (a
// JetStream cluster scales a stream up or down in place).
func TestConductor_ReplicasChangeOnRestart(t *testing.T) {
	t.Parallel()
	bundle, urls := clusterBundle(t)
	dir := t.TempDir()
	start := func(replicas int) *conductor.Conductor {
		c, err := conductor.New(conductor.Config{NATSURL: urls, DataDir: dir, Replicas: replicas})
		require.NoError(t, err)
		require.NoError(t, c.Start(context.Background()))
		t.Cleanup(c.Stop)
		return c
	}
	c := start(1)
	requireReplicas(t, bundle.js, 1, true)
	id, err := c.Client().Submit(context.Background(), "later", 1)
	require.NoError(t, err)
	c.Stop()

	c = start(3)
	// The new replicas catch up in the background: wait until the
	// cluster shows them.
	require.Eventually(t, func() bool {
		return allPlaced(bundle.js, 3)
	}, 20*time.Second, 50*time.Millisecond, "every stream at 3 replicas")
	requireReplicas(t, bundle.js, 3, true)
	j, err := c.Client().Job(context.Background(), id)
	require.NoError(t, err, "the job queued at R1 is kept")
	require.Equal(t, client.StatusQueued, j.Status)
}

// allPlaced reports whether every stream of js has want replicas placed;
// false if it cannot tell yet (a stream's info is not answered while the
// stream has no leader).
func allPlaced(js jetstream.JetStream, want int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	streams := js.ListStreams(ctx)
	ok := true
	for info := range streams.Info() {
		if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != want-1 {
			ok = false
		}
	}
	return ok && streams.Err() == nil
}

// TestNew_ReplicasRefused: a replica count out of range, or above 1
// without NATSURL (the embedded server keeps one copy), is refused.
func TestNew_ReplicasRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  conductor.Config
		want string
	}{
		{conductor.Config{Replicas: -1}, "bad replicas -1 (--replicas)"},
		{conductor.Config{Replicas: 6, NATSURL: "nats://127.0.0.1:4222"}, "bad replicas 6 (--replicas): want 1 to 5"},
		{conductor.Config{Replicas: 3}, "replicas 3 (--replicas) need a NATS cluster (--nats-url)"},
	} {
		_, err := conductor.New(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
}

// TestConductor_ReplicasSurviveServerLoss: with R3, the server that leads
// the job stream shuts down, and a job submitted then still runs through
// a workerd agent: the other two elect a leader, and the clients
// reconnect to them.
func TestConductor_ReplicasSurviveServerLoss(t *testing.T) {
	t.Parallel()
	servers := natstest.Cluster(t, 3)
	urls := natstest.URLs(servers)
	c, err := conductor.New(conductor.Config{NATSURL: urls, DataDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	bundle := &testBundle{nc: nc}
	bundle.js, err = jetstream.New(nc)
	require.NoError(t, err)
	startAgent(t, bundle, "squares")
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	id, err := c.Client().Submit(ctx, "squares", 3)
	require.NoError(t, err)
	_, err = c.Client().Wait(ctx, id)
	require.NoError(t, err)

	space, _ := subject.New("default")
	leader := -1
	for i, ns := range servers {
		if ns.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, space.JobStream()) {
			leader = i
		}
	}
	require.NotEqual(t, -1, leader, "a server leads the job stream")
	t.Logf("shutting down %s, the job stream's leader", servers[leader].Name())
	servers[leader].Shutdown()

	id, err = c.Client().Submit(ctx, "squares", 7)
	require.NoError(t, err)
	j, err := c.Client().Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, "49", string(j.Result))
}
