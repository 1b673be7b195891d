package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
)

// Job returns the state of job id, or ErrJobNotFound.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	if subject.Token("job id", id) != nil {
		return nil, ErrJobNotFound
	}
	if c.cfg.Submitter {
		return c.jobVia(ctx, id)
	}
	var j Job
	if err := c.readState(ctx, id, &j); err != nil {
		return nil, err
	}
	if j.Status == StatusQueued {
		markHeld([]*Job{&j}, c.heldJobs())
	}
	return &j, nil
}

// readState decodes the stored state of job id into v, which may take all
// of it (a Job) or only the fields it needs (a jobHead).
// A job that ended longer ago than its state is kept in the state bucket
// is read from conductord's archive. Each read waits publishAttemptTimeout
// at most and is made again: a read in flight when the server dies is
// lost with it, and would otherwise wait out the whole of ctx.
func (c *Client) readState(ctx context.Context, id string, v any) error {
	var data []byte
	e, err := c.getState(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if data, err = c.archived(ctx, id); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("conductor: read job %s: %w", id, err)
	default:
		data = e.Value()
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("conductor: decode job %s: %w", id, err)
	}
	return nil
}

// getState reads the entry of job id in the state bucket, each read
// bounded and made again (retry).
func (c *Client) getState(ctx context.Context, id string) (jetstream.KeyValueEntry, error) {
	var e jetstream.KeyValueEntry
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		e, err = c.kv.Get(ctx, id)
		return err
	})
	return e, err
}

// archived asks conductord for the archived state of job id: ErrJobNotFound
// if it has none, ErrArchiveUnavailable if it cannot tell (no conductord
// answers, or its archive is catching up or failed).
func (c *Client) archived(ctx context.Context, id string) ([]byte, error) {
	actx, cancel := context.WithTimeout(ctx, archiveTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(actx, c.space.ArchiveGet(), []byte(id))
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w: job %s is not in the state bucket, and no conductord answers for the archive", ErrArchiveUnavailable, id)
	case err != nil && ctx.Err() == nil && retryable(err):
		// Lost with a conductord that died, or one too busy: a Wait asks
		// again at its next recheck.
		return nil, fmt.Errorf("%w: no answer from conductord for job %s within %s: %w", ErrArchiveUnavailable, id, archiveTimeout, err)
	case err != nil:
		return nil, fmt.Errorf("conductor: read job %s from the archive: %w", id, err)
	case len(m.Data) > 0:
		return m.Data, nil
	case m.Header.Get(names.HeaderStatus) == "404":
		return nil, ErrJobNotFound
	case m.Header.Get(names.HeaderStatus) == "503":
		return nil, fmt.Errorf("%w: %s", ErrArchiveUnavailable, m.Header.Get(names.HeaderNATSDescription))
	}
	return nil, fmt.Errorf("conductor: read job %s from the archive: status %q %s", id, m.Header.Get(names.HeaderStatus), m.Header.Get(names.HeaderNATSDescription))
}

// archiveTimeout bounds a read of the archive.
const archiveTimeout = 5 * time.Second

// Wait blocks until job id has ended (succeeded or dead) and returns its
// state, or returns ctx's error with the job's latest state.
func (c *Client) Wait(ctx context.Context, id string) (*Job, error) {
	ch, err := c.addWaiter(id)
	if err != nil {
		return nil, err
	}
	defer c.removeWaiter(id, ch)
	return c.await(ctx, id, ch, nil)
}

// await waits on ch, a wait for job id, until the job has ended, reading
// its state first, at each recheck, and when an end comes without it.
// known, if not nil, is the job's state as its submission created it,
// before ch was made: the first read is not needed.
func (c *Client) await(ctx context.Context, id string, ch chan *Job, known *Job) (*Job, error) {
	tick := time.NewTicker(c.cfg.RecheckInterval)
	defer tick.Stop()
	j := known
	for {
		if known == nil {
			// Read after subscribing, so that an end between the two is
			// not missed.
			var err error
			j, err = c.Job(ctx, id)
			if err == nil && j.Status.Final() {
				return j, nil
			}
			if err != nil && ctx.Err() == nil && !errors.Is(err, ErrArchiveUnavailable) {
				return nil, err // the archive may answer at the next recheck
			}
		}
		known = nil
		if c.onWaiting != nil {
			c.onWaiting(id)
		}
		select {
		case ended := <-ch:
			// The job's final state, from its event or its end: no read
			// back. Only a host of the job's type may publish its events
			// and ends: one of another type's (a host of that type forging
			// the end of a job it cannot take) is read from the store
			// instead.
			if ended != nil && j != nil && ended.Type == j.Type {
				return ended, nil
			}
			// Ended (see JobEnded), or an event not trusted: the read
			// above finds it so, or not.
			ch = c.renewWaiter(id, ch)
		case <-ctx.Done():
			if j != nil && j.Status == StatusQueued {
				markHeld([]*Job{j}, c.heldJobs())
			}
			return j, ctx.Err()
		case <-tick.C:
		}
	}
}

// SubmitAndWait submits a job and waits for it to end.
func (c *Client) SubmitAndWait(ctx context.Context, typ string, payload any, opts ...SubmitOption) (*Job, error) {
	if c.cfg.Submitter {
		data, o, err := c.prepare(typ, payload, opts)
		if err != nil {
			return nil, err
		}
		return c.submitAndWaitVia(ctx, typ, data, o)
	}
	_, j, err := c.submitWait(ctx, 0, typ, payload, opts)
	return j, err
}

// SubmitWait queues a job as Submit does, then waits as Wait does, for
// wait at most from then, and returns the job's id and its state: final,
// or on a wait cut short (ctx's error, or context.DeadlineExceeded at the
// end of wait) the latest known, nil if none. An id of "" means the job
// was not queued, for the reason err gives. The wait is made before the
// job is queued: a job that the call queues is awaited with no read of
// its state, and its end brings its final state (JobEndedWith, or its job
// event).
func (c *Client) SubmitWait(ctx context.Context, wait time.Duration, typ string, payload any, opts ...SubmitOption) (string, *Job, error) {
	if wait <= 0 {
		return "", nil, fmt.Errorf("conductor: wait %s: want a duration over 0", wait)
	}
	return c.submitWait(ctx, wait, typ, payload, opts)
}

// submitWait is SubmitWait; a wait of 0 waits until ctx ends.
func (c *Client) submitWait(ctx context.Context, wait time.Duration, typ string, payload any, opts []SubmitOption) (string, *Job, error) {
	data, o, err := c.prepare(typ, payload, opts)
	if err != nil {
		return "", nil, err
	}
	var id string
	var w awaited
	if c.cfg.Submitter {
		id, _, err = c.submitVia(ctx, typ, data, o, 0)
	} else {
		id, err = c.queue(ctx, typ, data, o, &w)
	}
	if w.ch != nil {
		defer c.removeWaiter(cmp.Or(id, w.id), w.ch)
	}
	if err != nil {
		return "", nil, err
	}
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	if w.ch == nil {
		j, err := c.Wait(ctx, id)
		return id, j, err
	}
	j, err := c.await(ctx, id, w.ch, w.queued)
	return id, j, err
}

func (c *Client) addWaiter(id string) (chan *Job, error) {
	ch := make(chan *Job, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sub == nil && !c.cfg.FeedEnds && !c.cfg.Submitter {
		sub, err := c.nc.Subscribe(c.space.JobEvents(), c.jobEvent)
		if err != nil {
			return nil, fmt.Errorf("conductor: subscribe to job events: %w", err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		c.sub = sub
	}
	c.waiters[id] = append(c.waiters[id], ch)
	return ch, nil
}

func (c *Client) removeWaiter(id string, ch chan *Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[id]
	for i, w := range ws {
		if w == ch {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, id)
		return
	}
	c.waiters[id] = ws
}

// renewWaiter registers ch again for job id, whose event took it off:
// the wait goes on.
func (c *Client) renewWaiter(id string, ch chan *Job) chan *Job {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.waiters[id], ch) {
		c.waiters[id] = append(c.waiters[id], ch)
	}
	return ch
}

// jobEvent hands a final job event to the job's waiters.
func (c *Client) jobEvent(m *nats.Msg) {
	typ, status, ok := c.space.ParseJobEvent(m.Subject)
	if !ok || !Status(status).Final() {
		return
	}
	id := m.Header.Get(names.HeaderJobID)
	c.mu.Lock()
	ws := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	// An event is a hint: its body is the job's state only if it says so
	// (its job, its subject's type and status); else the waits read the
	// stored state (nil).
	var j *Job
	if err := json.Unmarshal(m.Data, &j); err != nil || j == nil || j.ID != id || j.Type != typ || string(j.Status) != status {
		j = nil
	}
	for _, w := range ws {
		w <- j
	}
}

// JobEnded wakes the waits of job id, which has ended: each reads the
// job's state. It is for a Client with Config.FeedEnds, whose program
// follows the job ends itself; it is harmless on any other.
func (c *Client) JobEnded(id string) {
	c.JobEndedWith(id, nil)
}

// JobEndedWith wakes the waits of job id, which has ended in state: the
// final state the job's host stored, as its ends carry it (docs/protocol.md).
// A wait returns it as the job's end, without reading the store, if it is
// a final state of job id of the job's type; else (or with no state) it
// reads the job's state, as after JobEnded. It is for a Client with
// Config.FeedEnds whose program takes a state only from an end it trusts
// as much as the store: what a wait returns is told as the job's.
func (c *Client) JobEndedWith(id string, state json.RawMessage) {
	c.mu.Lock()
	ws := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	for _, w := range ws {
		w <- finalState(id, state) // each wait its own copy
	}
}

// finalState decodes state if it is a final state of job id; else nil.
func finalState(id string, state json.RawMessage) *Job {
	if len(state) == 0 {
		return nil
	}
	var j Job
	if json.Unmarshal(state, &j) != nil || j.ID != id || !j.Status.Final() {
		return nil
	}
	return &j
}
