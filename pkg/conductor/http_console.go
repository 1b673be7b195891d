package conductor

import (
	"context"
	"errors"
	"net/http"
	"os"
	"time"
)

// Why a console stream was cut off (the reason logged). Its own names,
// not the event stream's, so that this file does not depend on
// http_events.go while that becomes the shared pump.
const (
	consoleOverflow     = "overflow"      // the client let more than Config.EventBuffer bytes wait
	consoleWriteTimeout = "write timeout" // one write blocked longer than Config.EventWriteTimeout
)

// streamConsole serves GET /v1/console/stream: the console's feed
// (console.go) as Server-Sent Events: first a history event (every job
// type's points so far), then the last snapshot event, then a snapshot
// event every second, until the client goes away or the conductor stops.
//
// It is bounded as GET /v1/events is: Config.MaxConsoleStreams streams at
// once (503 past them, by limit in Handler); a pump (consolePump) takes the
// snapshots as the sampler hands them out and queues them, up to
// Config.EventBuffer bytes, for this goroutine, which writes them out,
// each write bounded by Config.EventWriteTimeout. A client past either is
// cut off and logged; the sampler and the other streams are never held
// back. consolePump is eventPump on encoded frames: the shape of the pump
// that the events and logs streams are to share, which it should become.
func (c *Conductor) streamConsole(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(c.closing, cancel)()
	defer c.access.hold(caller(r).cred.ID, cancel)() // a revoked credential's stream ends
	if c.console == nil {
		writeError(w, http.StatusServiceUnavailable, "the console's feed is not running")
		return
	}
	first, frames, unsubscribe := c.console.subscribe()
	defer unsubscribe()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(frame []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(c.cfg.EventWriteTimeout)); err != nil {
			return err
		}
		if _, err := w.Write(frame); err != nil {
			return err
		}
		return rc.Flush()
	}
	if write(first) != nil {
		return
	}
	pump := &consolePump{max: c.cfg.EventBuffer, out: make(chan []byte), cancel: cancel, cut: func(buffered int) {
		c.consoleCut(r, consoleOverflow, buffered)
		_ = rc.SetWriteDeadline(time.Now()) // a write blocked on the client fails now
	}}
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		pump.run(ctx, frames)
	}()
	var err error
	for err == nil {
		frame, ok := <-pump.out
		if !ok {
			break // the client went, the conductor stops, or the pump cut the stream
		}
		err = write(frame)
	}
	cancel()
	<-pumped
	timedOut := errors.Is(err, os.ErrDeadlineExceeded) && !pump.overflowed
	if timedOut {
		c.consoleCut(r, consoleWriteTimeout, pump.queued)
	}
	if pump.overflowed || timedOut {
		panic(http.ErrAbortHandler) // the client sees its stream break
	}
}

// consoleCut logs that the console stream of r was cut off for reason,
// with buffered bytes queued for it.
func (c *Conductor) consoleCut(r *http.Request, reason string, buffered int) {
	c.log.Warn("console stream cut off: the client does not read it", "reason", reason, "remote", r.RemoteAddr,
		"buffered", buffered, "buffer_limit", c.cfg.EventBuffer, "write_timeout", c.cfg.EventWriteTimeout)
}

// consolePump queues the frames of one stream for its writer. Its run
// goroutine owns queue, queued and overflowed; the writer reads them only
// after run has returned.
type consolePump struct {
	max    int                // bytes queued at most
	out    chan []byte        // to the writer; closed when run returns
	cancel context.CancelFunc // ends the stream: called on overflow
	cut    func(buffered int) // told of an overflow, with the bytes queued

	queue      [][]byte // frames, oldest first
	queued     int      // bytes in queue
	overflowed bool     // run cut the stream
}

// run queues each frame of in and hands them to the writer in order,
// until in closes or ctx ends, or until a frame would take a queue that
// is not empty past max: then it cuts the stream. So a client holds at
// most max bytes plus one frame unread.
func (p *consolePump) run(ctx context.Context, in <-chan []byte) {
	defer close(p.out)
	for {
		var out chan<- []byte
		var head []byte
		if len(p.queue) > 0 {
			out, head = p.out, p.queue[0]
		}
		select {
		case <-ctx.Done():
			return
		case frame, ok := <-in:
			if !ok {
				return
			}
			if len(p.queue) > 0 && p.queued+len(frame) > p.max {
				p.overflowed = true
				p.cut(p.queued)
				p.cancel()
				return
			}
			p.queue = append(p.queue, frame)
			p.queued += len(frame)
		case out <- head:
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.queued -= len(head)
		}
	}
}
