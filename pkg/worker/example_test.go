package worker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/conductor-run/conductor/pkg/worker"
)

// This example plays workerd over two in-memory pipes: it reads the worker's
// ready, sends a job, reads its done, and asks the worker to shut down.
func ExampleRun() {
	square := func(ctx context.Context, job *worker.Job) (any, error) {
		var n int
		if err := job.Decode(&n); err != nil {
			return nil, worker.Permanent(err)
		}
		return n * n, nil
	}
	workerIn, toWorker := io.Pipe()
	fromWorker, workerOut := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- worker.Run(context.Background(), square, worker.WithChannel(workerIn, workerOut)) }()

	lines := bufio.NewScanner(fromWorker)
	lines.Scan()
	fmt.Println(lines.Text())
	fmt.Fprintln(toWorker, `{"op":"job","id":"j1","type":"squares","payload":7,"attempt":1}`)
	lines.Scan()
	fmt.Println(lines.Text())
	fmt.Fprintln(toWorker, `{"op":"shutdown"}`)
	fmt.Println("Run:", <-errc)
	// Output:
	// {"op":"ready","prefetch":64,"cache":256,"framed":true}
	// {"op":"done","id":"j1","result":49}
	// Run: <nil>
}
