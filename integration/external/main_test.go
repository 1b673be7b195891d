package external_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/pkg/worker"
)

// The test binary plays the worker: started by a pool (worker.IsWorker) with
// EXTERNAL_TEST_WORKER set to the name of a fake below, TestMain serves jobs
// with that fake's handler through pkg/worker instead of running the tests.
const envWorker = "EXTERNAL_TEST_WORKER"

var fakeWorkers = map[string]worker.Handler{
	"squares":      squares,
	"crash-on-job": crashOnJob,
}

func TestMain(m *testing.M) {
	if worker.IsWorker() {
		h, ok := fakeWorkers[os.Getenv(envWorker)]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown %s=%q\n", envWorker, os.Getenv(envWorker))
			os.Exit(2)
		}
		worker.Main(h)
		return
	}
	goleak.VerifyTestMain(m)
}

// workerEnv is the Spec.Env that makes a pool's processes the fake name.
func workerEnv(name string) []string { return []string{envWorker + "=" + name} }

// squares squares a number; any other payload fails for good.
func squares(_ context.Context, job *worker.Job) (any, error) {
	var n int
	if err := job.Decode(&n); err != nil {
		return nil, worker.Permanent(err)
	}
	if n < 0 {
		return nil, worker.Permanent(errors.New("negative"))
	}
	return n * n, nil
}

// crashOnJob is ready, then exits with status 3 on its first job.
func crashOnJob(context.Context, *worker.Job) (any, error) {
	os.Exit(3)
	return nil, nil
}
