package conductor

import (
	"context"
	"errors"
	"net/http"
	"os"
	"time"
)

// The one way conductord streams to an HTTP client, shared by GET
// /v1/events and GET /v1/pools/{name}/logs, so that a client that does not
// read costs conductord the same bounded memory and time on both.
//
// Two goroutines serve a stream. The pump takes the items from their
// source (a NATS subscription) as they come, so that NATS never holds them
// for this client, and queues them, encoded, up to Config.EventBuffer
// bytes; the handler's goroutine writes them out, each write bounded by
// Config.EventWriteTimeout. A client that does not read is cut off, and
// logged, when the queue would overflow or a write times out: what it
// costs conductord is bounded by EventBuffer and the socket's buffers, and
// the other streams are not held back. The streams of both routes count
// within one bound, Config.MaxEventStreams (Handler).

// streamKeepAlive is how often an idle stream sends its keep-alive, so
// that proxies keep it open and a vanished client is noticed.
const streamKeepAlive = 15 * time.Second

// Why a stream was cut off (the reason logged, and given to the
// onEventsCut test signal).
const (
	streamOverflow     = "overflow"      // the client let more than Config.EventBuffer bytes wait
	streamWriteTimeout = "write timeout" // one write blocked longer than Config.EventWriteTimeout
)

// stream is one streamed answer: its request, its writer, and the context
// that ends it when the client goes away, the conductor stops or the
// caller's credential is revoked.
type stream struct {
	c      *Conductor
	kind   string // what it streams, for the log: "event", "log"
	w      http.ResponseWriter
	r      *http.Request
	rc     *http.ResponseController
	ctx    context.Context
	cancel context.CancelFunc
}

// openStream makes the stream of r; end releases it, once the handler is
// done with it.
func (c *Conductor) openStream(w http.ResponseWriter, r *http.Request, kind string) (s *stream, end func()) {
	ctx, cancel := context.WithCancel(r.Context())
	stopClosing := context.AfterFunc(c.closing, cancel)
	release := c.access.hold(caller(r).cred.ID, cancel) // a revoked credential's stream ends
	s = &stream{c: c, kind: kind, w: w, r: r, rc: http.NewResponseController(w), ctx: ctx, cancel: cancel}
	return s, func() {
		release()
		stopClosing()
		cancel()
	}
}

// begin answers 200 with contentType and flushes the head.
func (s *stream) begin(contentType string) error {
	s.w.Header().Set("Content-Type", contentType)
	s.w.Header().Set("Cache-Control", "no-cache")
	s.w.Header().Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
	return s.write(nil)
}

// write writes data and flushes it within Config.EventWriteTimeout.
func (s *stream) write(data []byte) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.c.cfg.EventWriteTimeout)); err != nil {
		return err
	}
	if _, err := s.w.Write(data); err != nil {
		return err
	}
	return s.rc.Flush()
}

// cut logs that the stream was cut off for reason, with buffered bytes
// queued for it, and tells the test signal.
func (s *stream) cut(reason string, buffered int) {
	s.c.log.Warn(s.kind+" stream cut off: the client does not read it", "reason", reason, "remote", s.r.RemoteAddr,
		"buffered", buffered, "buffer_limit", s.c.cfg.EventBuffer, "write_timeout", s.c.cfg.EventWriteTimeout)
	if s.c.onEventsCut != nil {
		s.c.onEventsCut(reason, buffered)
	}
}

// abortIfTimedOut cuts s off, logged, if err is a write that timed out
// with nothing queued (the handler was writing itself): the client sees
// its stream break.
func (s *stream) abortIfTimedOut(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.cut(streamWriteTimeout, 0)
		panic(http.ErrAbortHandler)
	}
}

// pumped is an item of a stream and its frame, the bytes written for it.
type pumped[T any] struct {
	item  T
	frame []byte
	note  bool // a frame of the pump's own, with no item: the drops'
}

// pump queues the items of one stream for its writer. Its run goroutine
// owns queue, queued and overflowed; the writer reads them only after run
// has returned (done is closed).
type pump[T any] struct {
	max    int            // bytes queued at most
	encode func(T) []byte // an item's frame; nil: the item is skipped
	out    chan pumped[T] // to the writer; closed when run returns
	done   chan struct{}  // closed when run has returned
	s      *stream        // ended on overflow
	queue  []pumped[T]    // oldest first
	queued int            // bytes in queue
	over   bool           // run cut the stream
	// writing is closed when the writer starts taking frames
	// (serveStream). Before, a pump with dropNote drops the items past
	// max rather than cut (the handler is writing something else, such
	// as the log tails), and then queues dropNote(dropped).
	writing   chan struct{}
	droppable func(T) bool
	dropNote  func(dropped int) []byte
	dropped   int
}

// startPump starts the pump of s over in, whose items encode makes into
// frames.
func startPump[T any](s *stream, in <-chan T, encode func(T) []byte) *pump[T] {
	return startPumpDropping(s, in, encode, nil, nil)
}

// startPumpDropping is startPump, but for the droppable items that come
// past its bound before the writer starts: they are dropped, and
// dropNote's frame says how many (nil: they cut the stream, as they do
// once it writes). An item not droppable is queued past the bound.
func startPumpDropping[T any](s *stream, in <-chan T, encode func(T) []byte, droppable func(T) bool, dropNote func(dropped int) []byte) *pump[T] {
	p := &pump[T]{
		max: s.c.cfg.EventBuffer, encode: encode, out: make(chan pumped[T]), done: make(chan struct{}), s: s,
		writing: make(chan struct{}), droppable: droppable, dropNote: dropNote,
	}
	go func() {
		defer close(p.done)
		p.run(in)
	}()
	return p
}

// run queues the frame of each item of in and hands them to the writer in
// order, until in closes (and what it queued is handed) or the stream ends, or until a frame would take
// a queue that is not empty past max: then it cuts the stream. So a
// client holds at most max bytes plus one item unread.
func (p *pump[T]) run(in <-chan T) {
	defer close(p.out)
	writing := p.writing
	for {
		var out chan<- pumped[T]
		var head pumped[T]
		if len(p.queue) > 0 {
			out, head = p.out, p.queue[0]
		}
		select {
		case <-p.s.ctx.Done():
			return
		case <-writing:
			writing = nil
			if p.dropped > 0 {
				frame := p.dropNote(p.dropped)
				p.queue = append(p.queue, pumped[T]{frame: frame, note: true})
				p.queued += len(frame)
				p.dropped = 0
			}
		case item, ok := <-in:
			if !ok {
				// The source is done: what is queued still goes out.
				in = nil
				if len(p.queue) == 0 {
					return
				}
				continue
			}
			frame := p.encode(item)
			if frame == nil {
				continue
			}
			// One item is always taken when none waits, however large (a
			// worker's message is bounded by the channel protocol): the
			// bound is on what a client leaves unread, not on an item.
			if len(p.queue) > 0 && p.queued+len(frame) > p.max {
				holding := writing != nil && p.dropNote != nil // before the writer starts
				switch {
				case holding && p.droppable(item):
					p.dropped++
					continue
				case holding: // one that may not be dropped: queued past the bound
				default:
					p.over = true
					p.s.cut(streamOverflow, p.queued)
					p.s.cancel()
					// A write blocked on the client fails now, not at its
					// deadline. The writer is still in its loop: out closes
					// after this, and the writer waits for done.
					_ = p.s.rc.SetWriteDeadline(time.Now())
					return
				}
			}
			p.queue = append(p.queue, pumped[T]{item: item, frame: frame})
			p.queued += len(frame)
		case out <- head:
			p.queue[0] = pumped[T]{}
			p.queue = p.queue[1:]
			p.queued -= len(head.frame)
			if in == nil && len(p.queue) == 0 {
				return
			}
		}
	}
}

// errStreamEnded ends the write loop of a stream whose pump has stopped.
var errStreamEnded = errors.New("stream ended")

// serveStream writes the frames p queues, but for the items keep refuses
// (nil keeps all), and keepAlive when nothing came for streamKeepAlive,
// until the client goes away, the conductor stops or the pump cuts the
// stream. A stream cut off for a slow client is disconnected (the client
// sees it break, not end as it does when conductord stops).
func serveStream[T any](s *stream, p *pump[T], keep func(T) bool, keepAlive []byte) {
	close(p.writing)
	tick := time.NewTicker(streamKeepAlive)
	defer tick.Stop()
	var err error
	for err == nil {
		select {
		case f, ok := <-p.out:
			switch {
			case !ok:
				err = errStreamEnded
			case f.note || keep == nil || keep(f.item):
				err = s.write(f.frame)
			}
		case <-tick.C:
			err = s.write(keepAlive)
		}
	}
	s.cancel()
	<-p.done
	timedOut := errors.Is(err, os.ErrDeadlineExceeded) && !p.over
	if timedOut {
		s.cut(streamWriteTimeout, p.queued)
	}
	if p.over || timedOut {
		panic(http.ErrAbortHandler)
	}
}
