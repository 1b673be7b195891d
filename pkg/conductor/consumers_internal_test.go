package conductor

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// The sweep removes the consumers of a type served by no host for the
// idle time, and keeps those of a type served, of one unserved for less,
// of one whose consumer holds a job delivered and not acked (running, or
// waiting for its retry), and of one with a pull request waiting.
func TestConsumerSweep_RemovesOnlyTheUnservedAndIdle(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	space, _ := subject.New("default")
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: space.JobStream(), Subjects: []string{space.Jobs()}, Retention: jetstream.WorkQueuePolicy,
	})
	require.NoError(t, err)
	for _, typ := range []string{"served", "gone", "held", "pulled", "late"} {
		require.NoError(t, hostsvc.MakeConsumers(ctx, js, space, typ, 0))
		// Types that have had high and low jobs: three consumers each.
		for _, p := range []wire.Priority{wire.PriorityHigh, wire.PriorityLow} {
			ok, err := hostsvc.MakePriority(ctx, js, space, typ, p)
			require.NoError(t, err)
			require.True(t, ok)
		}
	}
	// held: a job delivered and not acked.
	_, err = js.Publish(ctx, space.Job("held"), []byte("1"))
	require.NoError(t, err)
	held, err := stream.Consumer(ctx, space.Consumer("held"))
	require.NoError(t, err)
	msgs, err := held.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	for range msgs.Messages() {
	}
	// pulled: a long poll waiting.
	pulled, err := stream.Consumer(ctx, space.ConsumerAt("pulled", string(wire.PriorityLow)))
	require.NoError(t, err)
	cc, err := pulled.Consume(func(jetstream.Msg) {})
	require.NoError(t, err)
	defer cc.Stop()
	require.Eventually(t, func() bool {
		info, err := pulled.Info(ctx)
		return err == nil && info.NumWaiting > 0
	}, 10*time.Second, 10*time.Millisecond)
	// gone: also a job queued, which must stay.
	_, err = js.Publish(ctx, space.Job("gone"), []byte("2"))
	require.NoError(t, err)

	var serving []string
	s := &consumerSweep{js: js, space: space, idle: time.Hour, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		types: func() []string { return serving }, served: map[string]time.Time{}}
	start := time.Now()
	serving = []string{"served", "late"}
	removed, err := s.pass(ctx, start, start)
	require.NoError(t, err)
	require.Empty(t, removed, "nothing is removed within the idle time of the term's start")

	removed, err = s.pass(ctx, start, start.Add(30*time.Minute))
	require.NoError(t, err)
	require.Empty(t, removed)

	serving = []string{"served"} // late was served until the last pass
	removed, err = s.pass(ctx, start, start.Add(time.Hour+time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"gone"}, removed)

	var left []string
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		left = append(left, name)
	}
	require.NoError(t, names.Err())
	for _, typ := range []string{"served", "held", "pulled", "late"} {
		for _, p := range wire.Priorities {
			require.Contains(t, left, space.ConsumerAt(typ, string(p)))
		}
	}
	require.False(t, slices.ContainsFunc(left, func(n string) bool { typ, _ := space.ParseConsumer(n); return typ == "gone" }))
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(space.Job("gone")))
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Subjects[space.Job("gone")], "the type's job stays queued")

	removed, err = s.pass(ctx, start, start.Add(90*time.Minute+time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"late"}, removed, "late, unserved since the 30-minute pass")
	require.Len(t, s.served, 3, "what it remembers is bounded by the consumers left")
}
