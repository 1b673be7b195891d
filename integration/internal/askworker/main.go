// Command askworker is a worker for the integration tests of the
// messages between workers and the conductor side: a job's payload
// {"command":"…","data":…} is asked of the conductor side (Job.Request),
// and the job's result is {"answer":…}, or {"unhandled":true}, or the
// request's error; each message it is sent it tells of with a request of
// command "seen", the message as its data. It counts its jobs in counter
// "asked".
package main

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/conductor-run/conductor/pkg/worker"
)

func main() {
	worker.Main(handle, worker.WithMessages(func(ctx context.Context, m *worker.Message) {
		_ = m.Request(ctx, "seen", m.Data, nil)
	}))
}

func handle(ctx context.Context, job *worker.Job) (any, error) {
	var p struct {
		Command string          `json:"command"`
		Data    json.RawMessage `json:"data"`
	}
	if err := job.Decode(&p); err != nil {
		return nil, worker.Permanent(err)
	}
	job.Count("asked", 1)
	var answer json.RawMessage
	err := job.Request(ctx, p.Command, p.Data, &answer)
	if errors.Is(err, worker.ErrUnhandled) {
		return map[string]bool{"unhandled": true}, nil
	}
	if err != nil {
		return nil, worker.Permanent(err)
	}
	return map[string]json.RawMessage{"answer": answer}, nil
}
