package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"

	"github.com/conductor-run/conductor/internal/proto"
)

// Option configures Run.
type Option func(*options)

type options struct {
	channel  bool // WithChannel was given
	in       io.Reader
	out      io.Writer
	hard     context.Context
	log      *slog.Logger
	prefetch int // < 0: not set by WithPrefetch
	cache    int // < 0: not set by WithLookupCache
	messages func(ctx context.Context, m *Message)
	// maxPayload bounds a job's framed payload; 0: the default.
	maxPayload int
}

// DefaultPrefetch is how many jobs a worker takes queued behind the one it
// runs unless WithPrefetch or CONDUCTOR_PREFETCH says otherwise.
const DefaultPrefetch = 64

// WithChannel makes Run read workerd's messages from in and write its own to
// out, instead of file descriptors 3 and 4. Tests use it to play workerd over
// os.Pipe or io.Pipe, and a program can use it to serve jobs in process.
//
// Run takes ownership of both: it closes each that is an io.Closer before it
// returns, as the exit of a worker process closes its descriptors. Closing in
// must unblock a pending Read, as it does for os.Pipe, io.Pipe and net.Conn;
// Run waits for its reading goroutine to end. If in is not an io.Closer,
// that goroutine ends only when a Read of in returns an error.
func WithChannel(in io.Reader, out io.Writer) Option {
	return func(o *options) { o.channel, o.in, o.out = true, in, out }
}

// WithHardStop gives Run a second, harder stop signal: when ctx is done, Run
// stops taking jobs, as on a graceful stop, and also cancels the running
// handler's context (with the cause "worker: hard stop"). The handler's
// error is reported to workerd as the job's outcome, which will be retried,
// and Run returns nil. Main uses it for a second SIGTERM or SIGINT.
func WithHardStop(ctx context.Context) Option {
	return func(o *options) { o.hard = ctx }
}

// WithPrefetch lets workerd write up to n jobs to the worker while it runs
// one, to be run next in order, so that the worker never waits for a round
// trip through workerd between short jobs. workerd queues jobs only while
// the worker's jobs take under 20ms on average; longer jobs go one at a
// time whatever n is. n = 0 takes one job at a time always; workerd caps n
// at 64, and the queued messages at 32 KiB. When the worker stops, jobs
// still queued go back to the queue for another worker, counted as no
// attempt.
//
// Without WithPrefetch, the environment variable CONDUCTOR_PREFETCH sets n
// (a pool spec's env=CONDUCTOR_PREFETCH=0 turns prefetch off for a pool
// without a rebuild), else DefaultPrefetch.
func WithPrefetch(n int) Option {
	return func(o *options) { o.prefetch = max(n, 0) }
}

// DefaultLookupCache is how many lookup answers a worker keeps unless
// WithLookupCache says otherwise.
const DefaultLookupCache = 256

// WithLookupCache lets the worker keep up to n answers of its lookups
// (8 MiB of them at most), which workerd marks as watched: a later
// Lookup of one of their keys is answered in the worker itself, with no
// round trip, until workerd says the key changed. n = 0 keeps none; workerd
// caps n at 1,024. A key changed elsewhere is dropped as soon as the
// change reaches workerd (docs/lookups.md, "How fresh a read is").
func WithLookupCache(n int) Option {
	return func(o *options) { o.cache = max(n, 0) }
}

// WithMessages makes Run call h with each message the conductor side
// sends the worker (to it alone, or to its pool, its host or everyone:
// docs/messages.md), one at a time, in the order they came, on a
// goroutine of their own, beside the jobs. Up to 1,024 wait while h runs;
// past that, a message is dropped and logged. Without WithMessages,
// messages are dropped unread. ctx ends when Run returns. The handler
// may answer with a request of its own (Message.Request).
func WithMessages(h func(ctx context.Context, m *Message)) Option {
	return func(o *options) { o.messages = h }
}

// WithMaxPayload bounds the payload of a job the worker takes, in bytes:
// a larger one is answered at once, failed for good, naming the limit,
// and never held in memory. Default (0) proto.DefaultMaxFrame, 256 MiB,
// the largest a conductor takes.
func WithMaxPayload(n int) Option {
	return func(o *options) { o.maxPayload = n }
}

// WithLogger makes Run log its warnings (a bad line or an unknown op from
// workerd, a panicking handler) to l instead of slog.Default(), which writes
// to stderr; workerd collects stderr into the worker's log.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// Run serves jobs with h: it tells workerd it is ready, then runs each job
// workerd sends, one at a time and in the order sent, and reports its
// outcome. See WithPrefetch for the jobs workerd may send ahead.
//
// Run stops gracefully, returning nil, when workerd sends the shutdown op or
// when ctx is done: it takes no further job, lets the running handler finish
// without cancelling its context, reports the outcome, and returns. Stopping
// on ctx, it first tells workerd it is busy so that no job is sent meanwhile;
// a job workerd wrote before it read that is run all the same (idle, Run
// waits 50 ms for one), since workerd counts it as running.
// See WithHardStop for a stop that does not wait for the handler.
//
// Run returns ErrChannelClosed when workerd closes the channel: it cancels
// the running handler's context, waits for the handler to return, and
// returns without reporting it, since there is no one to report to. It
// returns any other error reading or writing the channel in the same way.
// After a shutdown op, though, the end of the channel is expected: the
// running job still finishes and is reported.
//
// Without WithChannel, Run uses file descriptors 3 and 4, which workerd
// opens for the process, and returns an error if they are not open. Run does
// not handle signals; Main does.
func Run(ctx context.Context, h Handler, opts ...Option) error {
	if h == nil {
		return errors.New("worker: nil handler")
	}
	o := options{log: slog.Default(), prefetch: -1, cache: -1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.prefetch < 0 {
		n, err := prefetchFromEnv()
		if err != nil {
			return err
		}
		o.prefetch = n
	}
	if !o.channel {
		in, out, err := openChannel()
		if err != nil {
			return err
		}
		o.in, o.out = in, out
	}
	if o.in == nil || o.out == nil {
		return errors.New("worker: WithChannel needs both a reader and a writer")
	}
	var hard <-chan struct{}
	if o.hard != nil {
		hard = o.hard.Done()
	}

	if o.cache < 0 {
		o.cache = DefaultLookupCache
	}
	s := newServer(ctx, h, o.out, o.log, o.prefetch, o.cache)
	stopMessages := s.startMessages(o.messages)
	defer stopMessages()
	// Framed: workerd writes payloads after their lines, and neither end
	// scans them (Job.Payload).
	err := s.send(proto.Message{Op: proto.OpReady, Prefetch: s.prefetch, Cache: s.cacheSize, Messages: o.messages != nil, Framed: true})
	var reading, watching sync.WaitGroup
	if err == nil {
		done := make(chan struct{})
		reading.Go(func() { s.read(o.reader()) })
		watching.Go(func() { s.watch(ctx.Done(), hard, done) })
		err = s.serve()
		close(done)
		watching.Wait()
	}
	if c, ok := o.out.(io.Closer); ok {
		// Every message was written with one Write; nothing is pending.
		// Closed first, it ends a write of the reader's that workerd does
		// not read.
		_ = c.Close()
	}
	s.end() // the reader writes nothing more
	if c, ok := o.in.(io.Closer); ok {
		_ = c.Close()
		reading.Wait()
	}
	return err
}

// reader is the channel's reader: frames up to o.maxPayload, lines to
// their default limit.
func (o *options) reader() *proto.Reader {
	r := proto.NewReader(o.in, 0)
	if o.maxPayload > 0 {
		r.SetMaxFrame(o.maxPayload)
	}
	return r
}
