package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/flow"
	"github.com/conductor-run/conductor/pkg/broker"
)

// A pool drained on one host gives back at once the jobs it held ahead:
// another host's workers take them, instead of the jobs waiting for the
// drained host to stop. Resumed, it takes jobs again.
func TestSource_DrainGivesBackTheJobsHeldAhead(t *testing.T) {
	t.Parallel()
	h := holdAhead(t)
	start := time.Now()
	h.drained.pause()
	h.otherRunsAll(t, start)

	_, target, _ := h.drained.demand()
	require.Zero(t, target, "drained: it asks for no job")
	h.drained.resume()
	_, target, _ = h.drained.demand()
	require.Positive(t, target, "resumed, it asks for jobs again")
}

// A pool whose crash-loop breaker trips on one host gives back the jobs it
// held ahead, and holds none until it recovers: a worker of it still up
// gets one job when it asks.
func TestSource_FailedPoolGivesBackTheJobsHeldAhead(t *testing.T) {
	t.Parallel()
	h := holdAhead(t)
	start := time.Now()
	h.drained.poolEvent(broker.EventPoolFailed)
	h.otherRunsAll(t, start)

	waiting, target, _ := h.drained.demand()
	require.Equal(t, waiting, target, "failed: nothing held ahead")
	h.drained.poolEvent(broker.EventPoolRecovered)
	_, target, _ = h.drained.demand()
	require.Positive(t, target, "recovered, it holds jobs ahead again")
}

// heldAhead is two hosts' sources of one job type: drained, which holds
// jobs ahead of its one running job, and other, which holds none.
type heldAhead struct {
	b              *sourceBundle
	drained, other *source
	running        *broker.Job // the job drained's worker runs
	held, jobs     int
}

func holdAhead(t *testing.T) *heldAhead {
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
	h := &heldAhead{b: b, drained: mk("h1"), other: mk("h2"), jobs: 40}
	// Short jobs on the first host: it learns to hold jobs ahead.
	const warm = 10
	b.publish(t, warm)
	for range warm {
		done(h.drained, next(t, h.drained))
	}
	require.Eventually(t, func() bool { return b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond)
	b.publish(t, h.jobs)
	h.running = next(t, h.drained)
	require.Eventually(t, func() bool { _, ready := h.drained.out.counts(); return ready > 0 },
		10*time.Second, time.Millisecond, "the host holds jobs ahead")
	_, h.held = h.drained.out.counts()
	n, ids := h.drained.held(flow.MaxHeldAhead)
	require.Positive(t, n, "the heartbeat counts the jobs held")
	require.Len(t, ids, n, "and names each")
	_, few := h.drained.held(1)
	require.Len(t, few, 1, "within the bound")
	return h
}

// otherRunsAll checks that the drained host holds nothing and that the
// other host runs every job but the one running on the drained host, which
// then finishes.
func (h *heldAhead) otherRunsAll(t *testing.T, since time.Time) {
	first := next(t, h.other)
	t.Logf("%d jobs held ahead: the first ran on the other host %s later", h.held, time.Since(since))
	_, ready := h.drained.out.counts()
	require.Zero(t, ready, "nothing held on the host")
	done(h.other, first)
	for range h.jobs - 2 {
		done(h.other, next(t, h.other))
	}
	done(h.drained, h.running) // its worker finishes the job it ran
	require.Eventually(t, func() bool { return h.b.pending(t) == 0 }, 10*time.Second, 5*time.Millisecond, "every job acked")
}

// done ends job j well.
func done(src *source, j *broker.Job) {
	now := time.Now()
	src.Done(j, broker.Outcome{Result: []byte("1"), Started: now, Ended: now})
}
