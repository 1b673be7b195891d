package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/conductor-run/conductor/internal/proto"
)

// ErrUnhandled is matched by the error of a Request of a command that no
// handler of the conductor side answers.
var ErrUnhandled = errors.New("worker: unhandled command")

// RequestError is the conductor side's answer to a Request that failed:
// Code classes it as HTTP does (400 refused, 404 unhandled command, 429
// too many requests, 500 the handler failed, 504 no answer in time).
type RequestError struct {
	Command string
	Code    int
	Msg     string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("worker: request %s: %s (%d)", e.Command, e.Msg, e.Code)
}

// Is makes a 404 match ErrUnhandled.
func (e *RequestError) Is(target error) bool { return target == ErrUnhandled && e.Code == 404 }

// Request asks the conductor side command, with data encoded with
// json.Marshal, and decodes its answer into v (nil: not decoded), as
// json.Unmarshal does: okanjo's sendRequestToMaster. A handler of
// conductord (conductor.Config.Handlers), or any NATS responder on the
// command's subject, answers it (docs/messages.md); a command no one
// answers returns an error matching ErrUnhandled at once.
func (j *Job) Request(ctx context.Context, command string, data, v any) error {
	return j.srv.request(ctx, command, data, v)
}

// Request is Job.Request, from a message's handler.
func (m *Message) Request(ctx context.Context, command string, data, v any) error {
	return m.srv.request(ctx, command, data, v)
}

func (s *server) request(ctx context.Context, command string, data, v any) error {
	if s == nil {
		return errNoWorkerd
	}
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("worker: request %s: encode: %w", command, err)
	}
	r, err := s.ask(ctx, proto.Message{Op: proto.OpRequest, Command: command, Data: b})
	if err != nil {
		return fmt.Errorf("worker: request %s: %w", command, err)
	}
	if r.Error != "" {
		return &RequestError{Command: command, Code: r.Code, Msg: r.Error}
	}
	if v == nil || len(r.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		return fmt.Errorf("worker: request %s: decode its answer: %w", command, err)
	}
	return nil
}
