package workerd_test

import (
	"context"
	"fmt"
	"os"

	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/workerd"
)

// Run a host's pool against an in-process conductor; the workers are this
// program (see TestMain), which squares numbers.
func ExampleRun() {
	dir, _ := os.MkdirTemp("", "workerd-example-")
	defer os.RemoveAll(dir)
	c, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", MemoryStorage: true})
	if err != nil {
		panic(err)
	}
	if err := c.Start(context.Background()); err != nil {
		panic(err)
	}
	defer c.Stop()

	self, _ := os.Executable()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- workerd.Run(ctx, workerd.Config{
			NATSURL: c.NATSURL(),
			HostID:  "example",
			Pools:   []broker.Spec{{Name: "squares", Count: 1, Cmd: []string{self}}},
		})
	}()

	job, err := c.Client().SubmitAndWait(context.Background(), "squares", 7)
	if err != nil {
		panic(err)
	}
	fmt.Println(job.Status, string(job.Result))
	cancel() // the graceful stop
	fmt.Println(<-done)
	// Output:
	// succeeded 49
	// <nil>
}
