// Command okanjo-app-broker does in conductor what an okanjo-app-broker
// program did: it keeps a number of service workers alive, replaces one
// that dies (worker_death), recycles them (worker_ended), drains them and
// resumes them. It uses pkg/broker, the supervisor workerd runs,
// in-process; a real deployment runs `workerd --pool
// 'name=api,protocol=none,count=2,recycle=1h,cmd=…'` and steers it with
// conductorctl (recycle, drain, resume).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/conductor-run/conductor/pkg/broker"
)

func main() {
	if os.Getenv("APP_BROKER_WORKER") == "1" {
		// A service worker: it runs until it is told to stop.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		<-ctx.Done()
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "okanjo-app-broker:", err)
		os.Exit(1)
	}
}

func run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	events := make(chan broker.Event, 64)
	pool, err := broker.NewPool(broker.Config{
		Spec: broker.Spec{Name: "api", Count: 2, Protocol: broker.ProtocolNone, Cmd: []string{self},
			Env: []string{"APP_BROKER_WORKER=1"}, StopTimeout: 2 * time.Second},
		OnEvent: func(e broker.Event) {
			select {
			case events <- e:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := pool.Start(ctx); err != nil {
		return err
	}
	defer pool.Stop()
	// await waits for an event of kind (and reason, if not empty).
	await := func(kind broker.EventKind, reason broker.Reason) (broker.Event, error) {
		timeout := time.After(30 * time.Second)
		for {
			select {
			case e := <-events:
				if e.Kind == kind && (reason == "" || e.Reason == reason) {
					return e, nil
				}
			case <-timeout:
				return broker.Event{}, fmt.Errorf("no %s %s event within 30s", kind, reason)
			}
		}
	}
	for range 2 {
		if _, err := await(broker.EventWorkerStart, broker.ReasonStart); err != nil {
			return err
		}
	}
	fmt.Println("2 workers started")

	// worker_death: one dies, and is replaced.
	w := pool.Workers()[0]
	_ = syscall.Kill(w.PID, syscall.SIGKILL)
	if _, err := await(broker.EventWorkerExit, broker.ReasonFailure); err != nil {
		return err
	}
	if _, err := await(broker.EventWorkerStart, broker.ReasonRestart); err != nil {
		return err
	}
	fmt.Println("worker_death: a killed worker was replaced")

	// recycleWorkers(): each replaced, one at a time (worker_ended).
	if err := pool.Recycle(ctx); err != nil {
		return err
	}
	for range 2 {
		if _, err := await(broker.EventWorkerExit, broker.ReasonRecycle); err != nil {
			return err
		}
	}
	fmt.Println("worker_ended: both workers recycled")

	// drainWorkers(), then resumeWorkers().
	if err := pool.Drain(ctx, 0); err != nil {
		return err
	}
	if _, err := await(broker.EventPoolDrained, ""); err != nil {
		return err
	}
	fmt.Println("drained: no worker runs")
	if err := pool.Resume(ctx); err != nil {
		return err
	}
	if _, err := await(broker.EventPoolResumed, ""); err != nil {
		return err
	}
	fmt.Println("resumed: the workers run again")
	return nil
}
