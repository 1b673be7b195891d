package workerd_test

import (
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/pkg/worker"
)

// TestMain plays the pools' workers when run as one (worker.IsWorker), and
// fails the tests that leak goroutines otherwise.
func TestMain(m *testing.M) {
	if worker.IsWorker() {
		worker.Main(testHandler)
		return
	}
	goleak.VerifyTestMain(m)
}

// testHandler squares numbers; "block" runs until cancelled.
func testHandler(ctx context.Context, job *worker.Job) (any, error) {
	var s string
	if json.Unmarshal(job.Payload, &s) == nil && s == "block" {
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}
	var n int
	if err := job.Decode(&n); err != nil {
		return nil, err
	}
	return n * n, nil
}
