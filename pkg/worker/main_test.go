package worker_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/pkg/worker"
)

// modeEnv makes the test binary play a worker process: TestMain runs the
// fake it names instead of the tests.
const modeEnv = "GO_WORKER_TEST_MODE"

// fakes are the workers the test binary can play, by the value of modeEnv.
var fakes = map[string]func(){
	// squares serves jobs with squareHandler. A job of type "wait" first
	// prints "started <id>" on stdout and waits for a line on stdin.
	"squares": func() { worker.Main(squareHandler) },
	// noop answers every job at once, with no result.
	"noop": func() {
		worker.Main(func(context.Context, *worker.Job) (any, error) { return nil, nil })
	},
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(modeEnv); mode != "" {
		fake, ok := fakes[mode]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown %s %q\n", modeEnv, mode)
			os.Exit(2)
		}
		fake()
		return
	}
	goleak.VerifyTestMain(m)
}

// squareHandler squares the number in the payload. A job of type "wait"
// announces itself on stdout and waits for a line on stdin, or for its
// context to end, before it answers.
func squareHandler(ctx context.Context, job *worker.Job) (any, error) {
	var n float64
	if err := job.Decode(&n); err != nil {
		return nil, worker.Permanent(err)
	}
	if job.Type == "wait" {
		fmt.Printf("started %s\n", job.ID)
		line := make(chan struct{})
		go func() { // ends with the process
			bufio.NewReader(os.Stdin).ReadString('\n')
			close(line)
		}()
		select {
		case <-line:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	return n * n, nil
}
