package workerd_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/names"
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

// testHandler squares numbers; "block" runs until cancelled; "token"
// returns the worker's CONDUCTOR_TOKEN, if it has one.
func testHandler(ctx context.Context, job *worker.Job) (any, error) {
	var s string
	if json.Unmarshal(job.Payload, &s) == nil && s == "block" {
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}
	if s == "token" {
		v, ok := os.LookupEnv(names.EnvToken)
		return map[string]any{"set": ok, "value": v}, nil
	}
	var n int
	if err := job.Decode(&n); err != nil {
		return nil, err
	}
	return n * n, nil
}
