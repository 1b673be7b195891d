package hostsvc

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
)

// TestFollow_CancelWhileDisconnected: a cancel published while
// the host is away, and no other after it, is read on reconnect, with the
// periodic check out of the way.
func TestFollow_CancelWhileDisconnected(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	sp, _ := subject.New("default")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: sp.CancelBucket(), TTL: time.Hour})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: sp.JobStream(), Subjects: sp.JobSubjects(), Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	for _, b := range []string{sp.StateBucket(), sp.DeadBucket()} {
		_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b})
		require.NoError(t, err)
	}
	srv := NewServer(Config{Conn: nc, JS: js, Space: sp, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, srv.Start(ctx))
	t.Cleanup(srv.Stop)
	require.Eventually(t, func() bool { _, ok := srv.feed.page(0); return ok }, waitLimit, 5*time.Millisecond)

	gate := make(chan struct{})
	host, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(int) time.Duration { <-gate; return 0 }))
	require.NoError(t, err)
	t.Cleanup(host.Close)
	down := host.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING)
	r := follow(t, NewCaller(host, sp), time.Hour)
	require.Eventually(t, func() bool { return r.loads() == 1 }, waitLimit, 5*time.Millisecond)

	cid, err := host.GetClientID()
	require.NoError(t, err)
	require.NoError(t, ns.DisconnectClientByID(cid))
	select {
	case <-down:
	case <-time.After(waitLimit):
		t.Fatal("not disconnected")
	}
	_, err = kv.Put(ctx, "while-away", []byte("{}"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		srv.feed.mu.Lock()
		defer srv.feed.mu.Unlock()
		return srv.feed.seq == 1
	}, waitLimit, 5*time.Millisecond, "published while the host is away")
	close(gate)
	require.Eventually(t, func() bool { return r.has("while-away") }, waitLimit, 5*time.Millisecond)
}
