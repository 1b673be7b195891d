package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
)

// workerRequests returns the broker.Config.OnRequest of pool: a lookup
// goes to the lookups (lookups.go), a command to the conductor side
// (askConductor).
func (a *Agent) workerRequests(pool string) func(broker.Request, func(broker.Reply)) {
	return func(r broker.Request, answer func(broker.Reply)) {
		switch r.Kind {
		case broker.RequestLookup:
			a.lookups.request(r, answer)
		case broker.RequestCommand:
			a.askConductor(pool, r, answer)
		default:
			answer(broker.Reply{Error: fmt.Sprintf("unknown request %q", r.Kind), Code: 400})
		}
	}
}

// commandWait bounds the wait for the conductor side's answer to a
// worker's request (a handler has conductor.RequestTimeout, 30 s).
const commandWait = 35 * time.Second

// askConductor sends worker request r of pool to the conductor side, a NATS
// request on the command's subject with headers naming the worker, and
// answers with its answer: the data (status 200), or its error. A
// command no one answers is answered 404 at once ("unhandled command",
// as okanjo's); one not answered in time, 504. It shares the host's
// bound on requests in flight with the lookups.
func (a *Agent) askConductor(pool string, r broker.Request, answer func(broker.Reply)) {
	if err := subject.Token("command", r.Command); err != nil {
		answer(broker.Reply{Error: err.Error(), Code: 400})
		return
	}
	l := a.lookups
	select {
	case l.slots <- struct{}{}:
	default:
		answer(broker.Reply{Error: fmt.Sprintf("too many requests in flight on this host (%d)", maxLookupsInFlight), Code: 429})
		return
	}
	m := nats.NewMsg(a.space.Request(r.Command))
	m.Header.Set(names.HeaderHost, a.cfg.Host)
	m.Header.Set(names.HeaderPool, pool)
	m.Header.Set(names.HeaderWorker, strconv.Itoa(r.Index))
	m.Data = r.Data
	a.wg.Go(func() {
		defer func() { <-l.slots }()
		ctx, cancel := context.WithTimeout(a.ctx, commandWait)
		defer cancel()
		resp, err := a.cfg.Conn.RequestMsgWithContext(ctx, m)
		answer(commandReply(r.Command, resp, err))
	})
}

// commandReply is the worker's answer to its request of command, whose
// NATS answer was resp, or err.
func commandReply(command string, resp *nats.Msg, err error) broker.Reply {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return broker.Reply{Error: fmt.Sprintf("unhandled command %q: no handler answers it", command), Code: 404}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return broker.Reply{Error: fmt.Sprintf("command %q: no answer within %v", command, commandWait), Code: 504}
	case err != nil:
		return broker.Reply{Error: fmt.Sprintf("command %q: %v", command, err), Code: 503}
	}
	code, msg := 200, ""
	if s := resp.Header.Get(names.HeaderStatus); s != "" {
		var err error
		if code, err = strconv.Atoi(s); err != nil || code < 100 || code > 599 {
			return broker.Reply{Error: fmt.Sprintf("command %q: an answer of status %.40q", command, s), Code: 502}
		}
	}
	// A NATS micro service says its errors in headers of its own.
	if s := resp.Header.Get(micro.ErrorCodeHeader); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 400 && n <= 599 {
			code = n
		} else {
			code = 500
		}
		msg = resp.Header.Get(micro.ErrorHeader)
	}
	if code >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(resp.Data, &e)
		msg = cmp.Or(e.Error, msg, fmt.Sprintf("command %q answered %d", command, code))
		return broker.Reply{Error: msg, Code: code}
	}
	if len(resp.Data) > 0 && !json.Valid(resp.Data) {
		return broker.Reply{Error: fmt.Sprintf("command %q: its answer is not JSON", command), Code: 502}
	}
	return broker.Reply{Data: resp.Data}
}
