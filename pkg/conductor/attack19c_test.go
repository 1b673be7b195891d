package conductor_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestAttack19c_PriorityConsumerRemadeWhileJobsQueued: a type's high
// consumer removed (an operator, a lost consumer) while its high jobs are
// queued is made again by the leader. A host never asks conductord for a
// missing high or low consumer (only for the normal one), so the leader
// is the only one to make it; it remembered the subject as "made" for as
// long as the subject held jobs, and the jobs, which no consumer delivers,
// held it for ever: the high jobs were never run.
func TestAttack19c_PriorityConsumerRemadeWhileJobsQueued(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	sp, _ := subject.New("default")
	// The type is served: its normal consumer exists (a host's start).
	require.NoError(t, hostsvc.MakeConsumers(ctx, bundle.js, sp, "regone", 0))
	_, err := c.Client().Submit(ctx, "regone", 1, client.WithPriority(client.PriorityHigh))
	require.NoError(t, err)
	exists := func() bool {
		_, err := bundle.js.Consumer(ctx, sp.JobStream(), sp.ConsumerAt("regone", "high"))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	require.Eventually(t, exists, 10*time.Second, 20*time.Millisecond, "the leader makes the high consumer")

	stream, err := bundle.js.Stream(ctx, sp.JobStream())
	require.NoError(t, err)
	require.NoError(t, stream.DeleteConsumer(ctx, sp.ConsumerAt("regone", "high")))
	require.Eventually(t, exists, 20*time.Second, 20*time.Millisecond,
		"the high consumer, removed while its jobs are queued, is never made again")
}

// TestAttack19c_UnservedPriorityJobsCostLittle: high jobs queued for types
// no host serves (a type given up, its consumers swept) make the leader
// look their normal consumer up every second, each, for as long as the
// jobs stay: 50 such types were 50 JetStream API requests a second from an
// idle cluster, for ever. A host's start makes the consumers of the jobs
// queued then (hostsvc.MakeConsumers), so the leader need not look often.
func TestAttack19c_UnservedPriorityJobsCostLittle(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	ctx := context.Background()
	sp, _ := subject.New("default")
	const types = 50
	for i := range types {
		_, err := c.Client().Submit(ctx, fmt.Sprintf("unserved%d", i), 1, client.WithPriority(client.PriorityHigh))
		require.NoError(t, err)
	}
	lookups, err := bundle.nc.SubscribeSync("$JS.API.CONSUMER.INFO." + sp.JobStream() + ".>")
	require.NoError(t, err)
	require.NoError(t, bundle.nc.Flush())
	start := time.Now()
	// Wait out a few of the leader's passes.
	deadline := time.Now().Add(30 * time.Second)
	n := 0
	for time.Since(start) < 4*time.Second && time.Now().Before(deadline) {
		if _, err := lookups.NextMsg(100 * time.Millisecond); err == nil {
			n++
		}
	}
	t.Logf("%d consumer lookups in %s for %d unserved types", n, time.Since(start).Round(time.Millisecond), types)
	require.LessOrEqual(t, n, 2*types, "the leader looks each unserved type's consumer up every second")
}
