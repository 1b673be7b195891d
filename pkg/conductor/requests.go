package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
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

// maxHandling bounds the requests the handlers serve at once, and
// maxHandlingPerHost those of one host (a credential's, or a host id's
// without one): past them a request is answered 429, and one host's slow
// requests leave room for the others'.
const (
	maxHandling        = 256
	maxHandlingPerHost = 64
)

// handling counts the requests being handled, in all and by host.
type handling struct {
	all    chan struct{}
	mu     sync.Mutex
	byHost map[string]int // none at 0
	wg     sync.WaitGroup // the handlers running
}

// take takes a slot for host, or says why not.
func (h *handling) take(host string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byHost[host] >= maxHandlingPerHost {
		return fmt.Sprintf("host %s has %d requests being handled, its most; retry later", host, maxHandlingPerHost)
	}
	select {
	case h.all <- struct{}{}:
	default:
		return fmt.Sprintf("conductord handles %d requests at once, its most; retry later", maxHandling)
	}
	h.byHost[host]++
	return ""
}

func (h *handling) release(host string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	<-h.all
	if h.byHost[host]--; h.byHost[host] <= 0 {
		delete(h.byHost, host)
	}
}

// serveHandlers subscribes the Config.Handlers.
func (c *Conductor) serveHandlers() error {
	slots := &handling{all: make(chan struct{}, maxHandling), byHost: map[string]int{}}
	c.handling = slots
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
func (c *Conductor) serveRequest(slots *handling, h RequestHandler, m *nats.Msg) {
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
	host := "credential " + cred
	if cred == "" {
		host = "host " + r.Host
	}
	if why := slots.take(host); why != "" {
		c.answer(m, 429, map[string]string{"error": why})
		return
	}
	// On a goroutine of slots' (not the conductor's: Stop waits for the
	// handlers a bounded time, as one that ignores its context would hold
	// it for ever).
	if !c.serveAsyncIn(&slots.wg, func() { slots.release(host) }, func() {
		ctx, cancel := context.WithTimeout(c.closing, RequestTimeout)
		defer cancel()
		v, err := callHandler(ctx, h, r)
		if err == nil && len(v) > int(c.nc.MaxPayload())-4096 {
			err = &RequestError{Code: 413, Msg: fmt.Sprintf("handler of %q: a result of %d bytes, over the largest message the server takes", r.Command, len(v))}
		}
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

// handlersGrace is how long Stop waits for the handlers past their
// RequestTimeout; a handler still running then is left, and logged.
const handlersGrace = 5 * time.Second

// waitHandlers waits for the handlers running, at most RequestTimeout
// and handlersGrace: their contexts end when conductord closes.
func (c *Conductor) waitHandlers() {
	if c.handling == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		c.handling.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(handlersGrace):
		c.log.Error("handlers of workers' requests still running past their context's end; not waited for", "grace", handlersGrace)
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
