package client

import (
	"errors"
	"fmt"
)

// Errors of the Client, to branch on with errors.Is. Most come wrapped
// with what they concern ("conductor: job has ended: 0190... is dead").
var (
	// ErrJobNotFound is returned for a job id with no state: unknown, or
	// past the conductor's retention.
	ErrJobNotFound = errors.New("conductor: job not found")
	// ErrBadPayload is returned by Submit for a payload that is not JSON.
	ErrBadPayload = errors.New("conductor: payload is not valid JSON")
	// ErrJobEnded is returned by Cancel for a job that has ended already.
	ErrJobEnded = errors.New("conductor: job has ended")
	// ErrNotDead is returned by Requeue for a job that is not dead.
	ErrNotDead = errors.New("conductor: job is not dead")
	// ErrBadQuery is returned, wrapped with what is wrong, by Jobs for a
	// query it cannot answer.
	ErrBadQuery = errors.New("conductor: bad job query")
	// ErrIncomplete is the error of a listing that could not read every
	// job state (the store was too slow): it answers no partial page.
	ErrIncomplete = errors.New("conductor: listing incomplete: the store was too slow; try again")
	// ErrArchiveUnavailable is returned, wrapped with why, for a job whose
	// state is not in the state bucket when conductord's archive cannot
	// say whether it has it: no conductord answers, or its archive is
	// catching up after a start, or failed. The job may have ended.
	ErrArchiveUnavailable = errors.New("conductor: the archive of ended jobs cannot be read now")
	// ErrBatchNotFound is returned for an unknown batch id.
	ErrBatchNotFound = errors.New("conductor: batch not found")
	// ErrBadCommand is wrapped by the error of a pool command that is not
	// valid: an unknown op, a field the op does not take, a bad value or
	// name.
	ErrBadCommand = errors.New("conductor: bad pool command")
	// ErrPoolNotFound means no live host runs the pool (or not the host
	// asked for).
	ErrPoolNotFound = errors.New("conductor: pool not found")
	// ErrCommandRefused means every host refused the command or did not
	// answer; the results say why.
	ErrCommandRefused = errors.New("conductor: command refused")
	// ErrBadLogs is wrapped by the error of Logs for options it cannot
	// take: a bad pool or host name, a tail over MaxLogTail.
	ErrBadLogs = errors.New("conductor: bad logs request")
	// ErrForbidden means the server refused the Client's credential what
	// it asked: a role or a job type not its own (docs/security.md).
	ErrForbidden = errors.New("conductor: forbidden")
)

// PayloadTooLargeError reports a job payload over the conductor's limit.
type PayloadTooLargeError struct {
	Size, Limit int
	// Over names a limit other than the conductor's: "NATS max_payload"
	// for a payload a Submitter sends in its request (POST
	// /v1/jobs/{type} takes up to the conductor's limit).
	Over string
}

func (e *PayloadTooLargeError) Error() string {
	if e.Over != "" {
		return fmt.Sprintf("conductor: payload of %d bytes is over the limit of %d bytes (%s; submit it over HTTP)", e.Size, e.Limit, e.Over)
	}
	return fmt.Sprintf("conductor: payload of %d bytes is over the limit of %d bytes", e.Size, e.Limit)
}
