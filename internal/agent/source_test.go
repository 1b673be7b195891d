package agent

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
	"github.com/conductor-run/conductor/pkg/broker"
)

type sourceBundle struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	space subject.Space
	kv    jetstream.KeyValue
}

func setupSource(t *testing.T) (*source, *sourceBundle) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, _ := subject.New("default")
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: space.JobStream(), Subjects: []string{space.Jobs()}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(t, err)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: space.StateBucket()})
	require.NoError(t, err)

	a, err := New(Config{Conn: nc, Host: "h1"})
	require.NoError(t, err)
	require.NoError(t, a.ensureConsumer(ctx, "sq"))
	src, err := newSource(sourceConfig{
		nc: nc, js: a.js, kv: kv, space: space, typ: "sq", host: "h1", workers: 2, prefetch: 8, maxAttempts: 3, maxResult: 1 << 20,
		expires: 5 * time.Second, ackWait: 30 * time.Second, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	require.NoError(t, err)
	t.Cleanup(src.close)
	return src, &sourceBundle{nc: nc, js: js, space: space, kv: kv}
}

func TestSource_NextDeliversAtOnce(t *testing.T) {
	t.Parallel()
	src, b := setupSource(t)
	ctx := context.Background()
	for i := range 5 {
		_, err := b.js.Publish(ctx, b.space.Job("sq"), []byte{'0' + byte(i)})
		require.NoError(t, err)
	}
	for i := range 5 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		job, err := src.Next(ctx)
		cancel()
		require.NoError(t, err, "job %d", i)
		t.Logf("job %d after %s", i, time.Since(start))
		require.Equal(t, string([]byte{'0' + byte(i)}), string(job.Payload))
		src.Done(job, broker.Outcome{Result: []byte("1"), Ended: time.Now()})
	}
}
