package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// sseKeepAlive is how often an idle event stream sends a comment, so that
// proxies keep it open and a vanished client is noticed.
const sseKeepAlive = 15 * time.Second

// Why an event stream was cut off (the reason logged, and given to the
// onEventsCut test signal).
const (
	eventsOverflow     = "overflow"      // the client let more than Config.EventBuffer bytes wait
	eventsWriteTimeout = "write timeout" // one write blocked longer than Config.EventWriteTimeout
)

// streamEvents serves GET /v1/events: the worker and pool events, as
// Server-Sent Events, until the client goes away or the conductor stops.
//
// Two goroutines serve a stream. The pump (eventPump) takes the events
// from the subscription as they come, so that NATS never holds them for
// this client, and queues them, encoded, up to Config.EventBuffer bytes;
// this goroutine writes them out, each write bounded by
// Config.EventWriteTimeout. A client that does not read is cut off, and
// logged, when the queue would overflow or a write times out: what it
// costs conductord is bounded by EventBuffer and the socket's buffers, and
// the other streams are not held back.
func (c *Conductor) streamEvents(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(c.closing, cancel)()
	defer c.access.hold(caller(r).cred.ID, cancel)() // a revoked credential's stream ends
	events, err := c.client.Events(ctx, r.URL.Query().Get("pool"))
	switch {
	case errors.Is(err, subject.ErrBadToken):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
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
	if write(nil) != nil {
		return
	}
	pump := &eventPump{max: c.cfg.EventBuffer, frames: make(chan []byte), cancel: cancel, cut: func(buffered int) {
		c.eventsCut(r, eventsOverflow, buffered)
		// A write blocked on the client fails now, not at its deadline.
		// The handler is still in its loop: the pump closes frames after
		// this, and the handler waits for the pump before it returns.
		_ = rc.SetWriteDeadline(time.Now())
	}}
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		pump.run(ctx, events)
	}()
	keepAlive := time.NewTicker(sseKeepAlive)
	defer keepAlive.Stop()
	for err == nil {
		select {
		case frame, ok := <-pump.frames:
			if !ok {
				// The client went, the conductor stops, or the pump cut
				// the stream.
				err = errEventsEnded
				break
			}
			err = write(frame)
		case <-keepAlive.C:
			err = write([]byte(": keep-alive\n\n"))
		}
	}
	cancel()
	<-pumped
	timedOut := errors.Is(err, os.ErrDeadlineExceeded) && !pump.overflowed
	if timedOut {
		c.eventsCut(r, eventsWriteTimeout, pump.queued)
	}
	if pump.overflowed || timedOut {
		// Disconnect: the client sees its stream break, not end as it
		// does when conductord stops.
		panic(http.ErrAbortHandler)
	}
}

// errEventsEnded ends the write loop of an event stream whose pump has
// stopped.
var errEventsEnded = errors.New("event stream ended")

// eventsCut logs that the event stream of r was cut off for reason, with
// buffered bytes of events queued for it, and tells the test signal.
func (c *Conductor) eventsCut(r *http.Request, reason string, buffered int) {
	c.log.Warn("event stream cut off: the client does not read it", "reason", reason, "remote", r.RemoteAddr,
		"buffered", buffered, "buffer_limit", c.cfg.EventBuffer, "write_timeout", c.cfg.EventWriteTimeout)
	if c.onEventsCut != nil {
		c.onEventsCut(reason, buffered)
	}
}

// eventPump queues the events of one stream for its writer. Its run
// goroutine owns queue, queued and overflowed; the writer reads them only
// after run has returned.
type eventPump struct {
	max    int                // bytes queued at most
	frames chan []byte        // to the writer; closed when run returns
	cancel context.CancelFunc // ends the stream: called on overflow
	cut    func(buffered int) // told of an overflow, with the bytes queued

	queue      [][]byte // encoded events, oldest first
	queued     int      // bytes in queue
	overflowed bool     // run cut the stream
}

// run queues each event of events as an SSE frame and hands the frames to
// the writer in order, until events closes or ctx ends, or until a frame
// would take a queue that is not empty past max: then it cuts the stream.
// So a client holds at most max bytes plus one event unread.
func (p *eventPump) run(ctx context.Context, events <-chan client.Event) {
	defer close(p.frames)
	for {
		var out chan<- []byte
		var head []byte
		if len(p.queue) > 0 {
			out, head = p.frames, p.queue[0]
		}
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			frame := eventFrame(e)
			// One event is always taken when none waits, however large
			// (a worker's message is bounded by the channel protocol): the
			// bound is on what a client leaves unread, not on an event.
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

// eventFrame is e as one Server-Sent Event: a data line of compact JSON,
// valid UTF-8 (a worker's message is copied as it came), and a blank line.
func eventFrame(e client.Event) []byte {
	data, _ := json.Marshal(e) // an Event always encodes: its Data is checked JSON
	return fmt.Appendf(nil, "data: %s\n\n", validJSON(data))
}
