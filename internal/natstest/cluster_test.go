package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCluster_PlacesThreeReplicas: the three servers form one JetStream
// cluster, reached through the comma-separated URLs, that places a
// stream's three replicas, one on each.
func TestCluster_PlacesThreeReplicas(t *testing.T) {
	t.Parallel()
	servers := natstest.Cluster(t, 3)
	nc, err := nats.Connect(natstest.URLs(servers))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NotEmpty(t, nc.ConnectedClusterName())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "r3", Subjects: []string{"r3.>"}, Replicas: 3})
	require.NoError(t, err)
	info := s.CachedInfo()
	require.Equal(t, 3, info.Config.Replicas)
	require.NotNil(t, info.Cluster)
	require.NotEmpty(t, info.Cluster.Leader)
	require.Len(t, info.Cluster.Replicas, 2, "the leader and two replicas")
	_, err = js.Publish(ctx, "r3.x", []byte("1"))
	require.NoError(t, err)
}
