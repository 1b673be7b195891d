package conductor

import "net/http"

// streamConsole serves GET /v1/console/stream: the console's feed
// (console.go) as Server-Sent Events: first a history event (every job
// type's points so far), then the last snapshot event, then a snapshot
// event every second, until the client goes away or the conductor stops.
// At most Config.MaxConsoleStreams at once (503 past them, by limit in
// Handler); a client that does not read is cut off as an event stream's
// is (stream.go), and the sampler and the other streams are never held
// back.
func (c *Conductor) streamConsole(w http.ResponseWriter, r *http.Request) {
	if c.console == nil {
		writeError(w, http.StatusServiceUnavailable, "the console's feed is not running")
		return
	}
	s, end := c.openStream(w, r, "console")
	defer end()
	first, frames, unsubscribe := c.console.subscribe()
	defer unsubscribe()
	if s.begin("text/event-stream") != nil || s.write(first) != nil {
		return
	}
	serveStream(s, startPump(s, frames, func(frame []byte) []byte { return frame }), nil, []byte(": keep-alive\n\n"))
}
