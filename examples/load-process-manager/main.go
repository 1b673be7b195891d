// Command load-process-manager does in conductor what a
// load-process-manager program did: a supervisor forks workers, and the
// program enqueues requests to them and gets each response, with its id,
// timing, timeout and retries; it looks at the workers' health, resizes
// the pool, and broadcasts to the workers. Here the program runs a
// conductor and a workerd in itself, and forks itself as the workers; it
// needs nothing else running.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/worker"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// reverse is the worker side: it answers a request (a string) with the
// string reversed; "slow" takes longer than its timeout.
func reverse(ctx context.Context, job *worker.Job) (any, error) {
	var s string
	if err := job.Decode(&s); err != nil {
		return nil, worker.Permanent(err)
	}
	if s == "slow" {
		<-ctx.Done() // cancelled when its timeout passes
		return nil, context.Cause(ctx)
	}
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r), nil
}

func main() {
	if worker.IsWorker() {
		var got sync.Once
		worker.Main(reverse, worker.WithMessages(func(_ context.Context, m *worker.Message) {
			got.Do(func() { fmt.Fprintf(os.Stderr, "worker %d got the broadcast %s\n", worker.Index(), m.Data) })
		}))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "load-process-manager:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "load-process-manager-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The conductor, on loopback ports of its own.
	c, err := conductor.New(conductor.Config{DataDir: filepath.Join(dir, "data"), NATSListen: "127.0.0.1:0", MemoryStorage: true})
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	defer c.Stop()
	// The supervisor: 2 workers of this very program.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	wctx, stopWorkers := context.WithCancel(context.Background())
	var supervised sync.WaitGroup
	supervised.Go(func() {
		_ = workerd.Run(wctx, workerd.Config{NATSURL: c.NATSURL(), HostID: "local", Pools: []broker.Spec{{
			Name: "reverse", Count: 2, Cmd: []string{self}, JobTimeout: time.Second, MaxAttempts: 2,
		}}})
	})
	defer func() { stopWorkers(); supervised.Wait() }()

	cl, err := client.Connect(c.NATSURL(), client.Config{})
	if err != nil {
		return err
	}
	defer cl.Close()

	// enqueue(payload): each request answered with its response.
	for _, s := range []string{"hello", "conductor", "slow"} {
		start := time.Now()
		j, err := cl.SubmitAndWait(ctx, "reverse", s, client.WithTimeout(200*time.Millisecond))
		if err != nil {
			return err
		}
		if j.Status == client.StatusSucceeded {
			fmt.Printf("request %q: %s after %d attempt(s), %s\n", s, j.Result, j.Attempts, time.Since(start).Round(10*time.Millisecond))
		} else {
			fmt.Printf("request %q: %s after %d attempt(s): %s\n", s, j.Status, j.Attempts, j.Error)
		}
	}
	// health(): the workers, with their memory.
	ws, err := cl.Workers(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("%d workers\n", len(ws))
	// resize(n), then a broadcast to every worker.
	if _, err := cl.Command(ctx, "reverse", client.PoolCommand{Op: client.OpResize, Count: 3}, ""); err != nil {
		return err
	}
	for {
		ws, err := cl.Workers(ctx)
		if err != nil {
			return err
		}
		ready := 0
		for _, w := range ws {
			if w.State == "ready" || w.State == "busy" {
				ready++
			}
		}
		if ready == 3 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling the workers' state
		}
	}
	fmt.Println("resized to 3 workers")
	results, err := cl.Broadcast(ctx, "reverse", "", map[string]string{"reload": "config"})
	if err != nil {
		return err
	}
	n := 0
	for _, r := range results {
		n += r.Delivered
	}
	fmt.Printf("broadcast to %d workers\n", n)
	if n != 3 {
		return errors.New("the broadcast missed a worker")
	}
	return nil
}
