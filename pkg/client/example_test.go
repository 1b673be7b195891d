package client_test

import (
	"context"
	"fmt"
	"os"

	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// A submitter connects to the conductor's NATS, queues a job and waits for
// its result. Here the conductor runs in this process, and its workers are
// this test binary, which squares numbers (see TestMain).
func Example() {
	url, stop, err := startConductor()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	ctx := context.Background()
	c, err := client.Connect(url, client.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	job, err := c.SubmitAndWait(ctx, "squares", 7)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(job.Status, string(job.Result))
	// Output: succeeded 49
}

// startConductor starts an in-process conductor with one host of two
// workers of type squares, and returns its NATS URL and how to stop it all.
func startConductor() (url string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "conductor-example-")
	if err != nil {
		return "", nil, err
	}
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		_ = os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err == nil {
		var c *conductor.Conductor
		if c, err = conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", MemoryStorage: true}); err == nil {
			err = c.Start(context.Background())
			stops = append(stops, c.Stop)
			url = c.NATSURL()
		}
	}
	if err == nil {
		// The host runs until its context is cancelled; stop waits for it.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		spec := broker.Spec{Name: "squares", Count: 2, Cmd: []string{self}}
		go func() {
			done <- workerd.Run(ctx, workerd.Config{NATSURL: url, HostID: "example", Pools: []broker.Spec{spec}})
		}()
		stops = append(stops, func() { cancel(); <-done })
	}
	if err != nil {
		stop()
		return "", nil, err
	}
	return url, stop, nil
}
