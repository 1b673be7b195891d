package worker_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// Found by an outside review: Count refuses NaN and infinities, but sums the counts of a
// job in the worker before they go: two finite counts of MaxFloat64 sum
// to +Inf, which the count op cannot encode, and a message that cannot be
// encoded ends the run: the worker process exits over a count. The sum
// should be kept finite (or the count refused), and the job answered.
func TestCount_SumPastAFloatRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		job.Count("big", math.MaxFloat64)
		job.Count("big", math.MaxFloat64)
		job.Count("ok", 1)
		return nil, nil
	}, worker.WithPrefetch(0))
	done := func(id string) {
		t.Helper()
		for {
			m := b.recv(t)
			if m.Op == proto.OpDone {
				require.Equal(t, id, m.ID)
				return
			}
		}
	}
	b.sendJob(t, "j1", "t", "1")
	done("j1")
	select {
	case <-b.stopped:
		t.Fatalf("the run ended over a count: %v", b.err)
	case <-time.After(200 * time.Millisecond):
	}
	b.sendJob(t, "j2", "t", "1")
	done("j2")
}
