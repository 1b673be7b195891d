package integration

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// Reproductions of product bugs the chaos run found. Each is skipped
// unless CHAOS_KNOWN_BUGS=1, so that make test stays green until the bug is
// fixed; then the skip goes.

// skipKnownBug skips the test, naming the bug, unless CHAOS_KNOWN_BUGS=1.
func skipKnownBug(t *testing.T, bug string) {
	if os.Getenv("CHAOS_KNOWN_BUGS") != "1" {
		t.Skip("known bug: " + bug + " (CHAOS_KNOWN_BUGS=1 runs it)")
	}
}

// Kills of conductord under load may leave messages in the job stream
// that no consumer delivers again and the work queue never removes: once
// every job has ended and every worker is idle, the stream still holds
// them, counted as queued for ever. Found by TestChaos_NothingLost
// (CHAOS=long) once in three long runs: 180 messages left, none taken for
// 3 minutes by 6 idle workers, all of jobs that had ended (each a copy the
// kill kept from being removed, it seems). Intermittent: this shorter run
// of the same faults did not reproduce it in its first try; it is gated
// with the known bugs, and the chaos run reports such messages whenever
// it meets them (scanLeftovers).
func TestConductord_KillsLeaveNoMessageBehind(t *testing.T) {
	skipKnownBug(t, "conductord kills under load may leave messages in the job stream that nobody takes (intermittent)")
	const jobs, kills = 20_000, 3
	c := newCluster(t)
	f := newFaults(t, c, squares(2), 2, 0, 1)
	c.waitWorkers("squares", 4)
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	l := newLedger(jobs)
	plan := chaosPlan{jobs: jobs, spread: 40 * time.Second}
	ended := runJobs(ctx, l, cl, plan)
	for k := 1; k <= kills; k++ {
		require.True(t, poll(time.Minute, func() bool { return l.queued.Load() >= int64(k*jobs/(kills+1)) }), "jobs queued: %d", l.queued.Load())
		require.NoError(t, f.inject(ctx, killConductord))
	}
	select {
	case <-ended:
	case <-ctx.Done():
	}
	require.NoError(t, l.err())
	require.NoError(t, l.check())

	if !poll(time.Minute, func() bool {
		p := c.pool("squares")
		return workersIdle(c, 4) && p.Queued == 0 && p.Running == 0
	}) {
		left, err := scanLeftovers(ctx, cl)
		require.NoError(t, err)
		t.Fatalf("with every job ended and every worker idle for a minute, %s", left)
	}
}
