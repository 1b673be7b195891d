package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
)

// The workers' requests (docs/messages.md): a worker asks the conductor
// side a command (the channel's request op), workerd sends it as a NATS
// request on subject.Space.Request(command) (a host on a credential of
// its own: its account's import maps it to RequestAs, naming the
// credential), and the Config.Handlers of that command answer it.

// A WorkerRequest is a worker's request of a command, as a
// RequestHandler gets it.
type WorkerRequest struct {
	// Command is what the worker asks; Data what with (JSON, as sent).
	Command string
	Data    json.RawMessage
	// Host, Pool and Worker (the worker's index in its pool) name the
	// worker, as its workerd says. Credential is the host credential the
	// request came on, if any: then Host is that credential's host, not
	// what workerd says.
	Host       string
	Pool       string
	Worker     int
	Credential string
}

// A RequestHandler answers a worker's request. Its result is sent back
// encoded with json.Marshal (a json.RawMessage as it is); an error is
// sent back as the request's error, with the code of a *RequestError
// (else 500). ctx ends when conductord stops, or after RequestTimeout.
type RequestHandler func(ctx context.Context, r *WorkerRequest) (any, error)

// RequestError is an error a RequestHandler returns to answer with a
// code of its choosing (400: the request is refused).
type RequestError struct {
	Code int
	Msg  string
}

func (e *RequestError) Error() string { return e.Msg }

// RequestTimeout bounds a handler's work on one request; workerd waits
// for the answer as long.
const RequestTimeout = 30 * time.Second

// maxHandling bounds the requests the handlers serve at once; past it a
// request is answered 429.
const maxHandling = 256

// serveHandlers subscribes the Config.Handlers.
func (c *Conductor) serveHandlers() error {
	slots := make(chan struct{}, maxHandling)
	for command, h := range c.cfg.Handlers {
		if err := subject.Token("command", command); err != nil {
			return fmt.Errorf("conductor: handler: %w", err)
		}
		if h == nil {
			return fmt.Errorf("conductor: handler of %q: nil", command)
		}
		for _, subj := range []string{c.space.Request(command), c.space.RequestAs("*", command)} {
			sub, err := c.nc.QueueSubscribe(subj, "conductord", func(m *nats.Msg) { c.serveRequest(slots, h, m) })
			if err != nil {
				return fmt.Errorf("conductor: subscribe to requests of %q: %w", command, err)
			}
			c.subs = append(c.subs, sub)
		}
	}
	return nil
}

// serveRequest answers m, a worker's request, with h.
func (c *Conductor) serveRequest(slots chan struct{}, h RequestHandler, m *nats.Msg) {
	if !subject.IsInbox(m.Reply) {
		return
	}
	cred, command, ok := c.space.ParseRequest(m.Subject)
	if !ok {
		return
	}
	r := &WorkerRequest{Command: command, Data: m.Data, Credential: cred,
		Host: m.Header.Get(names.HeaderHost), Pool: m.Header.Get(names.HeaderPool)}
	r.Worker, _ = strconv.Atoi(m.Header.Get(names.HeaderWorker))
	if cred != "" {
		r.Host = ""
		if set := c.access.creds.Load(); set != nil {
			if cr, found := set.Get(cred); found {
				r.Host = cr.Host()
			}
		}
	}
	select {
	case slots <- struct{}{}:
	default:
		c.answer(m, 429, map[string]string{"error": fmt.Sprintf("conductord serves %d requests at once, its most; retry later", maxHandling)})
		return
	}
	if !c.serveAsync(func() { <-slots }, func() {
		ctx, cancel := context.WithTimeout(c.closing, RequestTimeout)
		defer cancel()
		v, err := callHandler(ctx, h, r)
		if err != nil {
			code := 500
			if re, ok := errors.AsType[*RequestError](err); ok && re.Code >= 400 && re.Code < 600 {
				code = re.Code
			}
			c.answer(m, code, map[string]string{"error": err.Error()})
			return
		}
		c.answer(m, 200, v)
	}) {
		c.answer(m, 503, map[string]string{"error": "conductord is stopping"})
	}
}

// callHandler calls h, making a panic its error and its result JSON.
func callHandler(ctx context.Context, h RequestHandler, r *WorkerRequest) (v json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler of %q panicked: %v", r.Command, p)
		}
	}()
	res, err := h(ctx, r)
	if err != nil {
		return nil, err
	}
	if raw, ok := res.(json.RawMessage); ok && json.Valid(raw) {
		return raw, nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("handler of %q: encode its result: %w", r.Command, err)
	}
	return b, nil
}
