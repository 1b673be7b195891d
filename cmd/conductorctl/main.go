// Command conductorctl is the operator's command line for a conductor's
// HTTP API. Run "conductorctl help" for its commands, and see docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/conductor-run/conductor/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal cancels ctx (submit -f still waits for the answer
	// of the batch in flight); a second one kills conductorctl at once.
	context.AfterFunc(ctx, stop)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
