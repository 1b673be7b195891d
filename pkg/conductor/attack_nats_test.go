package conductor_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestAttack_JobStreamConsumersRestart: conductord restarted with another
// MaxJobTypes, in a namespace of its own on a NATS server of one's own,
// sets the job stream's consumer bound to 3 x MaxJobTypes + 256 each time
// (up and down), keeps the jobs queued, and its replica count stays 1.
func TestAttack_JobStreamConsumersRestart(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	require.NoError(t, err)
	ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, err := subject.New("other")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dir := t.TempDir()
	var queued []string
	for i, types := range []int{10, 5000, 1, 20000} {
		c, err := conductor.New(conductor.Config{
			NATSURL: ns.ClientURL(), Namespace: "other", DataDir: dir, MaxJobTypes: types, HTTPListen: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		require.NoError(t, err)
		require.NoError(t, c.Start(ctx), "start %d with MaxJobTypes %d", i, types)
		s, err := js.Stream(ctx, space.JobStream())
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, 3*types+256, info.Config.MaxConsumers, "MaxJobTypes %d", types)
		require.Equal(t, 1, info.Config.Replicas)
		id, err := c.Client().Submit(ctx, "squares", i)
		require.NoError(t, err)
		queued = append(queued, id)
		for _, id := range queued {
			j, err := c.Client().Job(ctx, id)
			require.NoError(t, err)
			require.Equal(t, "queued", string(j.Status))
		}
		c.Stop()
	}
}

// TestAttack_JobStreamConsumersNamespace: in a namespace whose account
// bounds its consumers (NamespaceMaxConsumers on the embedded server), the
// job stream's consumer bound is capped by the account's, whatever
// MaxJobTypes is, across restarts of the namespace's conductord, and the
// namespace's conductord starts and queues jobs.
func TestAttack_JobStreamConsumersNamespace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	tokens := map[string]string{}
	for _, cr := range []auth.Credential{
		{ID: "a-root", Role: auth.Admin},
		{ID: "b-conductord", Role: auth.Admin, Namespace: "b"},
	} {
		tok, err := auth.Add(path, cr, false)
		require.NoError(t, err)
		tokens[cr.ID] = tok
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := conductor.New(conductor.Config{DataDir: dir, Namespace: "a", NATSListen: "127.0.0.1:0", Credentials: path, NamespaceMaxConsumers: 40, Logger: log.With("ns", "a")})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
	nc, err := nats.Connect(a.NATSURL(), client.WithToken(tokens["b-conductord"]))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, err := subject.New("b")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bdir := t.TempDir()
	var queued []string
	for i, types := range []int{100, 2, 10000} {
		b, err := conductor.New(conductor.Config{DataDir: bdir, Namespace: "b", NATSURL: a.NATSURL(), Token: tokens["b-conductord"], MaxJobTypes: types, Logger: log.With("ns", "b")})
		require.NoError(t, err)
		require.NoError(t, b.Start(ctx), "start %d with MaxJobTypes %d", i, types)
		s, err := js.Stream(ctx, space.JobStream())
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, min(3*types+256, 40), info.Config.MaxConsumers, "MaxJobTypes %d", types)
		id, err := b.Client().Submit(ctx, "squares", i)
		require.NoError(t, err)
		queued = append(queued, id)
		for _, id := range queued {
			j, err := b.Client().Job(ctx, id)
			require.NoError(t, err)
			require.Equal(t, "queued", string(j.Status))
		}
		b.Stop()
	}
}
