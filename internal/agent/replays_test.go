package agent

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

func TestReplays_NewServer(t *testing.T) {
	t.Parallel()
	var r replays
	require.False(t, r.connected(""), "not connected at start")
	require.False(t, r.connected("A"), "the first server")
	require.False(t, r.suspect(1, "A"))
	require.False(t, r.connected("A"), "a reconnect to the same server")
	require.False(t, r.suspect(1, "A"))
	require.True(t, r.suspect(1, "B"), "connected to a new server not handled yet")
	require.False(t, r.connected(""), "dropped again at once: ignored")
	require.True(t, r.connected("B"), "another server: a restart")
	require.True(t, r.suspect(1_000_000, "B"), "every message until the stream's last sequence is known")
	r.below.Store(10)
	r.all.Store(false)
	require.True(t, r.suspect(10, "B"))
	require.False(t, r.suspect(11, "B"), "stored after the restart")
	require.False(t, r.suspect(0, "B"), "no sequence: not a stream message")
	require.False(t, (*replays)(nil).suspect(1, "C"))
}

// A server that restarts from a kill may lose its consumer's state and
// deliver a message that ran before as a first delivery (a delivery count
// of 1). Once the agent knows the server is a new one, such a message
// claims its state first: the worker sees attempt 2, redelivered, and the
// attempt before is marked lost, not overwritten as if it never was. The
// lost consumer state is made here by deleting the consumer and creating
// it again.
func TestSource_ReplayAfterTheServerLostItsConsumerState(t *testing.T) {
	t.Parallel()
	b, _ := bareBundle(t, 0)
	ctx := context.Background()
	r := &replays{}
	src := b.bareSource(t, "h1", 0, r)

	b.publish(t, 1)
	first := next(t, src)
	require.Equal(t, 1, first.Attempt)
	require.False(t, first.Redelivered)
	b.state(t, first, wire.StatusRunning)

	// The server forgets the delivery; the agent has seen a new server.
	require.NoError(t, b.js.DeleteConsumer(ctx, b.space.JobStream(), b.space.Consumer("sq")))
	a, err := New(Config{Conn: b.nc, Host: "h1"})
	require.NoError(t, err)
	require.NoError(t, a.ensureConsumer(ctx, "sq"))
	r.all.Store(true)
	src.leases.release(first.Handle.(*heldJob).msg)

	again := next(t, src)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, 1, int(mustMeta(t, again).NumDelivered), "the server counts it a first delivery")
	require.Equal(t, 2, again.Attempt, "the attempt the state counted comes first")
	require.True(t, again.Redelivered, "an earlier attempt may have run")
	now := time.Now()
	src.Done(again, broker.Outcome{Result: []byte(`"again"`), Started: now, Ended: now})
	st := b.state(t, again, wire.StatusSucceeded)
	require.Len(t, st.History, 2)
	require.True(t, st.History[0].Lost, "the attempt before the restart never reported: lost")
	require.Equal(t, 2, st.History[1].Attempt)
}

// A message that names its job (its own id, no state stored first) whose
// job has ended and left the state bucket for the archive is not run
// again, and the final state is not shadowed by a new one in the bucket.
func TestSource_NamedCopyOfAnArchivedJobDoesNotRun(t *testing.T) {
	t.Parallel()
	b, archived := bareBundle(t, time.Second)
	js, kv, space := b.js, b.kv, b.space
	ctx := context.Background()
	src := b.bareSource(t, "h1", time.Second, nil)

	publishNamed := func(payload string) {
		m := nats.NewMsg(space.Job("sq"))
		m.Header.Set(names.HeaderJobID, "order-42")
		m.Data = []byte(payload)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	publishNamed("1")
	job := next(t, src)
	require.Equal(t, "order-42", job.ID)
	now := time.Now()
	src.Done(job, broker.Outcome{Result: []byte(`"first"`), Started: now, Ended: now})
	b.state(t, job, wire.StatusSucceeded)
	require.Eventually(t, func() bool {
		_, err := kv.Get(ctx, job.ID)
		return errors.Is(err, jetstream.ErrKeyNotFound) && archived(job.ID)
	}, 15*time.Second, 50*time.Millisecond, "the final state leaves the bucket for the archive")

	publishNamed("2") // the same job, published again later
	tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	copyJob, err := src.Next(tctx) // takes the copy from the stream, and does not hand it out
	require.Nil(t, copyJob, "the copy of an ended job is not run")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool {
		info, err := js.Stream(ctx, space.JobStream())
		return err == nil && info.CachedInfo().State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond, "the copy is acked")
	_, err = kv.Get(ctx, job.ID)
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "no new state shadows the archived one")
}

// bareBundle starts a server with the conductor's streams and bucket (final
// states living finalTTL, archived by a stand-in, when it is not 0) and an
// agent's consumers of type sq, with no source yet.
func bareBundle(t *testing.T, finalTTL time.Duration) (*sourceBundle, func(id string) bool) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, _ := subject.New("default")
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: space.JobStream(), Subjects: []string{space.Jobs()}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	cfg := jetstream.KeyValueConfig{Bucket: space.StateBucket()}
	if finalTTL > 0 {
		cfg.LimitMarkerTTL, cfg.Metadata = time.Second, map[string]string{names.MetaFinalTTL: finalTTL.String()}
	}
	kv, err := js.CreateKeyValue(ctx, cfg)
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: space.EndsStream(), Subjects: []string{space.AllJobEnds()}})
	require.NoError(t, err)
	serveHosts(t, nc, js, space)
	var archived func(string) bool
	if finalTTL > 0 {
		archived = archiveStandIn(t, nc, js, space)
	}
	a, err := New(Config{Conn: nc, Host: "h1"})
	require.NoError(t, err)
	require.NoError(t, a.ensureConsumer(ctx, "sq"))
	return &sourceBundle{nc: nc, js: js, jsAgent: a.js, space: space, kv: kv}, archived
}

// bareSource is a source of type sq on b, of host.
func (b *sourceBundle) bareSource(t *testing.T, host string, finalTTL time.Duration, r *replays) *source {
	t.Helper()
	src, err := newSource(sourceConfig{
		nc: b.nc, js: b.jsAgent, kv: b.kv, space: b.space, typ: "sq", host: host, workers: 2, maxAttempts: 3, maxResult: 1 << 20,
		expires: time.Second, ackWait: 30 * time.Second, finalTTL: finalTTL, replays: r,
		log: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	require.NoError(t, err)
	t.Cleanup(src.close)
	return src
}

func mustMeta(t *testing.T, job *broker.Job) *nats.MsgMetadata {
	t.Helper()
	md, err := job.Handle.(*heldJob).msg.Metadata()
	require.NoError(t, err)
	return md
}
