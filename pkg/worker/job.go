package worker

import (
	"context"
	"encoding/json"
	"fmt"
)

// Job is one attempt at a job, as workerd hands it to the worker.
type Job struct {
	// ID names the job; it is the same on every attempt.
	ID string
	// Type is the job type, which is also the name of the pool serving it.
	Type string
	// Payload is the job's input as submitted, untouched: workerd writes
	// it to the worker after the job's line (framed), and neither end
	// reads it through. The submit paths (HTTP, pkg/client, the submit
	// request) take only JSON, but a job published straight to the job
	// stream is not checked on the way: Decode is where a payload that is
	// not JSON shows, as its error.
	Payload json.RawMessage
	// Attempt counts the attempts at this job, starting at 1.
	Attempt int
	// Redelivered is set when an earlier attempt at this job may have
	// run, all or in part: a handler with side effects checks here
	// whether they are done already.
	Redelivered bool

	srv *server // the Run that handed the job out, for its lookups; nil in a Job made by hand
}

// Decode unmarshals the job's payload into v, as json.Unmarshal does. Its
// error names the job. A payload that cannot be decoded will not decode on a
// retry either, so handlers usually return the error wrapped with Permanent.
func (j *Job) Decode(v any) error {
	if err := json.Unmarshal(j.Payload, v); err != nil {
		return fmt.Errorf("job %s: decode payload: %w", j.ID, err)
	}
	return nil
}

// Handler runs one job and returns its result, which is sent to workerd
// encoded with json.Marshal; a json.RawMessage is sent as it is, and a nil
// result (or one that encodes as null) is sent as no result.
//
// A non-nil error fails the attempt: workerd retries the job with backoff
// unless the error is wrapped with Permanent. The result is then ignored.
//
// ctx is cancelled when workerd cancels the job, when workerd goes away, and
// on a hard stop (see WithHardStop); a handler must return soon after.
// context.Cause(ctx) tells which. A graceful stop does not cancel ctx.
//
// A panic in a handler is recovered and fails the attempt with the error
// "panic: <value>"; the worker goes on serving.
type Handler func(ctx context.Context, job *Job) (result any, err error)
