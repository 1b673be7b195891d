// Command slowsquares is a worker for the integration tests of killed
// workers: squares-worker's jobs (a JSON number n, the result n*n), each
// taking 2ms of simulated work, so that its process spends most of its
// time running a job and a kill finds it holding one. squares-worker's
// jobs take microseconds: a test killing its workers at random found none
// running in 47 kills.
package main

import (
	"context"
	"time"

	"github.com/conductor-run/conductor/pkg/worker"
)

func main() { worker.Main(square) }

func square(ctx context.Context, job *worker.Job) (any, error) {
	var n float64
	if err := job.Decode(&n); err != nil {
		return nil, worker.Permanent(err)
	}
	select {
	case <-time.After(2 * time.Millisecond): // the work
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return n * n, nil
}
