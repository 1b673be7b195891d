package conductor

import (
	"net/http"
	"time"
)

// streamConsole serves GET /v1/console/stream: the console's feed
// (console.go) as Server-Sent Events: first a history event (every job
// type's points so far), then the last snapshot event, then a snapshot
// event every second, until the client goes away or the conductor stops.
// At most Config.MaxConsoleStreams at once (503 past them, by limit in
// Handler). A snapshot supersedes the ones before, so the stream has no
// queue (the shared pump of stream.go): a client slower than the feed
// gets the newest snapshot each time it has taken one, and the sampler
// and the other streams are never held back. A client that does not
// read is cut off when a write takes longer than
// Config.EventWriteTimeout, and logged.
func (c *Conductor) streamConsole(w http.ResponseWriter, r *http.Request) {
	if c.console == nil {
		writeError(w, http.StatusServiceUnavailable, "the console's feed is not running")
		return
	}
	s, end := c.openStream(w, r, "console")
	defer end()
	first, frames, unsubscribe := c.console.subscribe()
	defer unsubscribe()
	err := s.begin("text/event-stream")
	if err == nil {
		err = s.write(first)
	}
	tick := time.NewTicker(streamKeepAlive)
	defer tick.Stop()
	for err == nil {
		select {
		case <-s.ctx.Done():
			return
		case frame := <-frames:
			err = s.write(frame)
		case <-tick.C:
			err = s.write([]byte(": keep-alive\n\n"))
		}
	}
	s.abortIfTimedOut(err)
}
