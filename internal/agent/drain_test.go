package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// A pool drained on one host gives back at once the jobs it held ahead:
// another host's workers take them, instead of the jobs waiting for the
// drained host to stop. Resumed, it takes jobs again.
func TestSource_DrainGivesBackTheJobsHeldAhead(t *testing.T) {
	t.Parallel()
	b, _ := bareBundle(t, 0)
	mk := func(host string) *source {
		src, err := newSource(sourceConfig{
			nc: b.nc, js: b.jsAgent, kv: b.kv, space: b.space, typ: "sq", host: host, workers: 2, prefetch: 8,
			maxAttempts: 3, maxResult: 1 << 20, expires: time.Second, ackWait: 30 * time.Second,
			log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
		require.NoError(t, err)
		t.Cleanup(src.close)
		return src
	}
	drained, other := mk("h1"), mk("h2")
	now := time.Now()
	done := func(src *source, j *broker.Job) {
		src.Done(j, broker.Outcome{Result: []byte("1"), Started: now, Ended: now})
	}
	// Short jobs on the first host: it learns to hold jobs ahead.
	const warm, jobs = 10, 40
	b.publish(t, warm)
	for range warm {
		done(drained, next(t, drained))
	}
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)
	b.publish(t, jobs)
	running := next(t, drained)
	require.Eventually(t, func() bool { _, ready := drained.out.counts(); return ready > 0 },
		10*time.Second, time.Millisecond, "the host holds jobs ahead")
	_, held := drained.out.counts()

	start := time.Now()
	drained.pause()
	first := next(t, other)
	t.Logf("drained with %d jobs held ahead: the first ran on the other host %s later", held, time.Since(start))
	_, ready := drained.out.counts()
	require.Zero(t, ready, "nothing held on the drained host")
	done(other, first)
	for range jobs - 2 {
		done(other, next(t, other))
	}
	done(drained, running) // its worker finishes the job it ran
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond, "every job acked")

	_, target, _ := drained.demand()
	require.Zero(t, target, "drained: it asks for no job")
	drained.resume()
	_, target, _ = drained.demand()
	require.Positive(t, target, "resumed, it asks for jobs again")
}
