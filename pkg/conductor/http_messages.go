package conductor

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/conductor-run/conductor/pkg/client"
)

// The messages to workers over HTTP (docs/messages.md):
//
//	POST /v1/workers/{host}/{pool}/{index}/message   body: the message (JSON)
//	POST /v1/pools/{name}/broadcast[?host=]           body: the message (JSON)
//
// A message is queued for one worker (202 {"delivered":1}; 404 no such
// worker; 409 a worker that takes no messages); a broadcast for every worker of the pool ("*": of every pool)
// on every live host, or on host (202, each host's answer with how many
// of its workers it reached).

// maxMessageBody bounds a message's body.
const maxMessageBody = 1 << 20

// readMessage reads a message body: one JSON value.
func readMessage(w http.ResponseWriter, r *http.Request) (json.RawMessage, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessageBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "a message is at most 1 MiB: "+err.Error())
		return nil, false
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "a message is one JSON value")
		return nil, false
	}
	return body, true
}

// sendMessage serves POST /v1/workers/{host}/{pool}/{index}/message.
func (c *Conductor) sendMessage(w http.ResponseWriter, r *http.Request) {
	index, err := strconv.Atoi(r.PathValue("index"))
	if err != nil || index < 0 {
		writeError(w, http.StatusBadRequest, "a worker's index is a number, 0 or more")
		return
	}
	data, ok := readMessage(w, r)
	if !ok {
		return
	}
	err = c.client.SendMessage(r.Context(), r.PathValue("host"), r.PathValue("pool"), index, data)
	switch {
	case errors.Is(err, client.ErrBadCommand):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, client.ErrNoWorker):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, client.ErrNoMessages):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		writeError(w, http.StatusBadGateway, err.Error())
	default:
		writeJSON(w, http.StatusAccepted, map[string]int{"delivered": 1})
	}
}

// broadcast serves POST /v1/pools/{name}/broadcast.
func (c *Conductor) broadcast(w http.ResponseWriter, r *http.Request) {
	data, ok := readMessage(w, r)
	if !ok {
		return
	}
	pool := r.PathValue("name")
	results, err := c.client.Broadcast(r.Context(), pool, r.URL.Query().Get("host"), data)
	switch {
	case errors.Is(err, client.ErrBadCommand):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, client.ErrPoolNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		delivered := 0
		for _, res := range results {
			delivered += res.Delivered
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"pool": pool, "delivered": delivered, "hosts": results})
	}
}
