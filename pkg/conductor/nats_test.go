package conductor_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// The job stream takes only the subjects a pool's consumers read: a job
// published anywhere else under the jobs prefix gets no ack, instead of an
// ack for a job that is never run, counted or shown.
func TestConductor_JobStreamRefusesUnreadSubjects(t *testing.T) {
	t.Parallel()
	_, bundle := setup(t, conductor.Config{MemoryStorage: true})
	ctx := context.Background()
	space, _ := subject.New("default")

	for _, subj := range []string{space.Job("squares"), space.JobAt("squares", "high"), space.JobAt("squares", "low")} {
		_, err := bundle.js.Publish(ctx, subj, []byte("1"))
		require.NoError(t, err, subj)
	}
	for _, subj := range []string{
		space.Job("squares") + ".extra",
		space.Job("squares") + ".normal",
		space.Job("squares") + ".high.x",
		space.Job("squares") + ".a.b.c",
	} {
		_, err := bundle.js.Publish(ctx, subj, []byte("1"))
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse, subj)
	}
	stream, err := bundle.js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	require.Equal(t, uint64(3), stream.CachedInfo().State.Msgs, "only the three jobs a pool reads are stored")
}

// A job stream created by an older conductord, on the whole jobs prefix,
// is narrowed at start; the messages it stored on a subject that no pool
// reads are logged and removed, the jobs a pool reads are kept.
func TestConductor_OldJobStreamNarrowedAtStart(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	space, _ := subject.New("default")
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: space.JobStream(), Subjects: []string{space.Jobs()},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	require.NoError(t, err)
	publish := func(subj, id string) {
		m := nats.NewMsg(subj)
		m.Header.Set("Conductor-Job-Id", id)
		m.Data = []byte("1")
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err, subj)
	}
	publish(space.Job("squares"), "kept-1")
	publish(space.JobAt("squares", "high"), "kept-2")
	publish(space.Job("squares")+".extra", "stray-1")
	publish(space.Job("squares")+".extra", "stray-2")
	publish(space.Job("squares")+".a.b", "stray-3")
	publish(space.Job("bad:type"), "stray-4") // a type no pool can have

	logs := &syncLog{}
	c, err := conductor.New(conductor.Config{
		NATSURL: ns.ClientURL(), DataDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), nil)),
	})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(c.Stop)

	stream, err := js.Stream(ctx, space.JobStream())
	require.NoError(t, err)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(space.Jobs()))
	require.NoError(t, err)
	require.ElementsMatch(t, space.JobSubjects(), info.Config.Subjects)
	require.Equal(t, map[string]uint64{space.Job("squares"): 1, space.JobAt("squares", "high"): 1}, info.State.Subjects)
	logged := logs.String()
	require.Contains(t, logged, "subject="+space.Job("squares")+".extra removed=2")
	require.Contains(t, logged, "subject="+space.Job("squares")+".a.b removed=1")
	require.Contains(t, logged, "subject="+space.Job("bad:type")+" removed=1")

	_, err = js.Publish(ctx, space.Job("squares")+".extra", []byte("1"))
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse, "refused from now on")
}
