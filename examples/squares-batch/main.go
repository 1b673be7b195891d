// Command squares-batch is the seeds' single-file demo: one program that
// conducts a batch of the numbers 0..9 and forks itself as 2 workers, which
// square them. It needs nothing else running: the library embeds a
// conductor on a free port and supervises the workers itself.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/worker"
)

// square is the worker side: it runs in the forked copies of this program.
func square(_ context.Context, job *worker.Job) (any, error) {
	var n int
	if err := job.Decode(&n); err != nil {
		return nil, worker.Permanent(err)
	}
	return result{N: n, Square: n * n, Worker: worker.Index() + 1}, nil
}

type result struct {
	N      int `json:"n"`
	Square int `json:"square"`
	Worker int `json:"worker"`
}

func main() {
	if worker.IsWorker() {
		worker.Main(square)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := conductor.RunBatch(ctx, conductor.BatchConfig{
		Type:    "squares",
		Workers: 2,
		Jobs: func(submit func(payload any) error) error {
			for i := range 10 {
				if err := submit(i); err != nil {
					return err
				}
			}
			return nil
		},
		OnJobEnd: func(j *client.Job) {
			var r result
			if j.Status != client.StatusSucceeded || json.Unmarshal(j.Result, &r) != nil {
				fmt.Printf("Job %s failed: %s\n", j.ID, j.Error)
				return
			}
			fmt.Printf("Worker %d, Job %d => the square is %d\n", r.Worker, r.N, r.Square)
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "squares-batch:", err)
		os.Exit(1)
	}
	if res.Dead > 0 {
		fmt.Fprintf(os.Stderr, "squares-batch: %d of %d jobs failed\n", res.Dead, res.Total)
		os.Exit(1)
	}
	fmt.Println("All jobs finished processing")
}
