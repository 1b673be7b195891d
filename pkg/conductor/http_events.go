package conductor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// streamEvents serves GET /v1/events: the worker and pool events, as
// Server-Sent Events, until the client goes away or the conductor stops.
// A client that does not read is cut off (stream.go).
func (c *Conductor) streamEvents(w http.ResponseWriter, r *http.Request) {
	s, end := c.openStream(w, r, "event")
	defer end()
	events, err := c.client.Events(s.ctx, r.URL.Query().Get("pool"))
	switch {
	case errors.Is(err, subject.ErrBadToken):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if s.begin("text/event-stream") != nil {
		return
	}
	serveStream(s, startPump(s, events, eventFrame), nil, []byte(": keep-alive\n\n"))
}

// eventFrame is e as one Server-Sent Event: a data line of compact JSON,
// valid UTF-8 (a worker's message is copied as it came), and a blank line.
func eventFrame(e client.Event) []byte {
	data, _ := json.Marshal(e) // an Event always encodes: its Data is checked JSON
	return fmt.Appendf(nil, "data: %s\n\n", validJSON(data))
}
