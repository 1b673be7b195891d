// The server of one Run: its state, which three goroutines share (see
// server), and the two helpers each of them calls under mu: failLocked, to
// end the run, and wakeLocked, to wake the runner. Run (run.go) starts the
// reader (reader.go) and the watcher (watcher.go) and becomes the runner
// (runner.go); answers to workerd are written as answers.go says. Locks:
// wmu before mu, never the other way.

package worker

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/flow"
	"github.com/conductor-run/conductor/internal/proto"
)

// server is one Run. Three goroutines share it:
//
//   - the runner (the goroutine that called Run) runs the jobs, one after
//     the other, in the order they came: jobs queued behind the running one
//     run with no hand-off between goroutines, which is what lets a worker
//     take thousands of short jobs a second for little CPU;
//   - the reader takes workerd's messages as they come: it queues jobs (or
//     refuses them), and acts at once on a cancel or a shutdown, and on the
//     end of the channel;
//   - the watcher acts on Run's stop signals, and writes the answers the
//     runner holds back (see next) once they have waited holdMax.
//
// The state below mu is theirs in common. Answers are encoded into pending
// and written in one write by flush, by whichever goroutine has them.
type server struct {
	h        Handler
	log      *slog.Logger
	base     context.Context // parent of handler contexts: Run's ctx, not its cancellation
	prefetch int             // jobs workerd may queue behind the running one
	lateWait time.Duration   // lateJobWait; tests lengthen it

	wmu   sync.Mutex // held across taking pending and writing it, so answers keep their order
	out   *proto.Writer
	ended bool // guarded by wmu: Run has returned; write nothing more

	wake chan struct{} // -> runner, waiting in next: there may be something to do
	held chan struct{} // runner -> watcher: answers are held back

	mu       sync.Mutex
	job      *Job                    // the running job (see startHeadLocked); nil between jobs
	ctx      context.Context         // job's context
	cancel   context.CancelCauseFunc // cancels ctx
	queue    []proto.Message         // jobs to run next, in order
	pending  []byte                  // messages encoded and not yet written
	pendOp   proto.Op                // the first one's op, to name them in an error
	idle     bool                    // the runner waits on wake
	armed    bool                    // the watcher will flush held answers within holdMax
	draining bool                    // take no job; return once the running one is reported
	shutdown bool                    // workerd sent the shutdown op
	lateMay  bool                    // after our own stop while idle, the job workerd counts as running may still come (see acceptLocked)
	err      error                   // ends the run: the channel closed or failed
	avgRun   flow.Average            // of handler run times, in nanoseconds (the runner's)

	// The handlers' requests (lookup.go): the last req number given,
	// those waiting for their reply, and, once the channel from workerd
	// has ended, askErr, with gone closed.
	lastReq uint64
	asks    map[uint64]ask
	askErr  error
	gone    chan struct{}
	// The lookup answers kept (lookup.go): at most cacheSize, of
	// keptBytes; lastWrite is the req of the worker's last write.
	cacheSize int
	keptVals  map[string]keptValue
	keptBytes int
	lastWrite uint64
	// msgQ holds the messages for the WithMessages handler (messages.go);
	// nil without one.
	msgQ chan json.RawMessage
	// counts are the increments of Count not yet written (count.go).
	counts map[string]float64
}

func newServer(ctx context.Context, h Handler, out io.Writer, log *slog.Logger, prefetch, cacheSize int) *server {
	return &server{
		h:         h,
		log:       log,
		prefetch:  prefetch,
		cacheSize: cacheSize,
		lateWait:  lateJobWait,
		out:       proto.NewWriter(out),
		base:      context.WithoutCancel(ctx),
		wake:      make(chan struct{}, 1),
		held:      make(chan struct{}, 1),
		asks:      make(map[uint64]ask),
		gone:      make(chan struct{}),
	}
}

// failLocked ends the run with err, unless it has ended already: the
// running handler is cancelled with err as the cause.
func (s *server) failLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	if s.job != nil {
		s.cancel(err)
	}
	s.endAsksLocked(err)
	s.wakeLocked()
}

// wakeLocked wakes the runner if it waits.
func (s *server) wakeLocked() {
	if s.idle {
		s.idle = false
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}
