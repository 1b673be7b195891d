// Command noop-worker answers every job at once with no result. Benchmarks
// use it to measure the cost of the conductor itself.
//
//	workerd --pool 'name=noop,count=8,cmd=./bin/noop-worker'
package main

import (
	"context"

	"github.com/conductor-run/conductor/pkg/worker"
)

func main() {
	worker.Main(func(context.Context, *worker.Job) (any, error) { return nil, nil })
}
