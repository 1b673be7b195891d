// Command noop-worker answers every job with no result, at once or after
// -delay. Benchmarks use it to measure the cost of the conductor itself.
//
//	workerd --pool 'name=noop,count=8,cmd=./bin/noop-worker'
//	workerd --pool 'name=slow,count=8,cmd=./bin/noop-worker -delay 2ms'
package main

import (
	"context"
	"flag"
	"time"

	_ "github.com/conductor-run/conductor/internal/profiling" // pprof in -tags pprof builds
	"github.com/conductor-run/conductor/pkg/worker"
)

func main() {
	delay := flag.Duration("delay", 0, "how long each job takes")
	flag.Parse()
	worker.Main(func(ctx context.Context, _ *worker.Job) (any, error) {
		if *delay <= 0 {
			return nil, nil
		}
		t := time.NewTimer(*delay)
		defer t.Stop()
		select {
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	})
}
