package worker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main runs h as the whole program: a worker's main function is a call to
// Main. It serves jobs with Run over file descriptors 3 and 4, then exits:
// with status 0 after a stop, or with status 1, printing the error to
// stderr, when Run fails (workerd went away, or the program was not started
// by workerd).
//
// Main handles SIGTERM and SIGINT the way workerd expects. The first is a
// graceful stop: no further job is taken, and the running job finishes and
// is reported. The second is a hard stop (see WithHardStop): the running
// handler's context is cancelled. A third signal kills the process.
// opts are Run's (WithPrefetch, WithLookupCache, WithMessages,
// WithLogger).
func Main(h Handler, opts ...Option) {
	soft, stopSoft := context.WithCancel(context.Background())
	hard, stopHard := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	go func() {
		for _, stop := range []context.CancelFunc{stopSoft, stopHard} {
			select {
			case <-sigs:
				stop()
			case <-done:
				return
			}
		}
		signal.Stop(sigs) // restore the default action: the next signal kills
	}()

	err := Run(soft, h, append(opts, WithHardStop(hard))...)
	close(done)
	signal.Stop(sigs)
	stopSoft()
	stopHard()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
