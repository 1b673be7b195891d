package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// deadIndexWait is how long Requeue waits for a dead job to be indexed.
const deadIndexWait = 2 * time.Second

// awaitIndexed returns the dead job index's entry of id, which it did not
// have: ErrJobNotFound or ErrNotDead for a job that is not dead, else the
// entry once the job's host indexes it (it does just after it stores the
// dead state: a caller told the job is dead may ask before then).
func (c *Client) awaitIndexed(ctx context.Context, kv jetstream.KeyValue, id string) (jetstream.KeyValueEntry, error) {
	j, err := c.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.Status != StatusDead {
		return nil, fmt.Errorf("%w: %s is %s", ErrNotDead, id, j.Status)
	}
	e, err := waitIndexed(ctx, kv, id)
	if err != nil {
		return nil, fmt.Errorf("conductor: dead job %s is not in the dead job index: %w", id, err)
	}
	return e, nil
}

// waitIndexed waits, up to deadIndexWait, for id's entry in the dead job
// index kv.
func waitIndexed(ctx context.Context, kv jetstream.KeyValue, id string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, deadIndexWait)
	defer cancel()
	w, err := kv.Watch(ctx, id, jetstream.UpdatesOnly())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	// Indexed between the Get and the Watch?
	if e, err := kv.Get(ctx, id); err == nil {
		return e, nil
	}
	for {
		select {
		case e := <-w.Updates():
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				return e, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("not indexed within %s", deadIndexWait)
		}
	}
}

// DeadJobs lists the dead jobs, of type typ if not empty, newest first, at
// most limit of them (DefaultListLimit if 0, at most MaxListLimit). Each
// comes with its payload and every attempt's error. It is Jobs with a
// query for status dead.
func (c *Client) DeadJobs(ctx context.Context, typ string, limit int) ([]*Job, error) {
	if err := c.forOperators("DeadJobs"); err != nil {
		return nil, err
	}
	return c.Jobs(ctx, JobQuery{Status: []Status{StatusDead}, Type: typ, Limit: min(limit, MaxListLimit)})
}

// Requeue queues dead job id again with its payload: it runs again from
// its first attempt, its history kept, and leaves the dead list. A job
// that is not dead is left alone (ErrNotDead); an unknown one is
// ErrJobNotFound. It returns the job's new state (with an error too if the
// job was queued but could not be taken off the dead list).
func (c *Client) Requeue(ctx context.Context, id string) (*Job, error) {
	if err := c.forOperators("Requeue"); err != nil {
		return nil, err
	}
	if subject.Token("job id", id) != nil {
		return nil, ErrJobNotFound
	}
	kv, err := c.bucket(ctx, c.space.DeadBucket(), "dead job index")
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if e, err = c.awaitIndexed(ctx, kv, id); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("conductor: read dead job %s: %w", id, err)
	}
	var dead Job
	if err := json.Unmarshal(e.Value(), &dead); err != nil {
		return nil, fmt.Errorf("conductor: decode dead job %s: %w", id, err)
	}
	ctx = context.WithoutCancel(ctx) // the three steps go together
	cur, err := c.kv.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("conductor: read the state of job %s: %w", id, err)
	}
	var now Job
	if err := json.Unmarshal(cur.Value(), &now); err != nil {
		return nil, fmt.Errorf("conductor: decode the state of job %s: %w", id, err)
	}
	if now.Status != StatusDead {
		return nil, fmt.Errorf("%w: %s is %s", ErrNotDead, id, now.Status)
	}
	// The queued state first: a worker may take the job the moment it is
	// published, and its states must come after this one. It claims the
	// state over its dead revision, so that no write of an attempt from
	// before it wins over it (wire.Holder).
	queued := &Job{
		ID: id, Type: dead.Type, Status: StatusQueued, Batch: dead.Batch, Priority: dead.Priority,
		CreatedAt: dead.CreatedAt, UpdatedAt: time.Now().UTC(), History: now.History,
		HistoryDropped: now.HistoryDropped, Holder: wire.ClaimOver(cur.Revision(), 0, "requeue").String(),
	}
	state, _ := json.Marshal(queued)
	rev, err := c.kv.Update(ctx, id, state, cur.Revision())
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Another caller requeued it (or its state changed) first.
		return nil, fmt.Errorf("%w: %s was requeued by another caller, or its state changed, meanwhile", ErrNotDead, id)
	case err != nil:
		return nil, fmt.Errorf("conductor: store the state of job %s: %w", id, err)
	}
	o := submitOptions{
		job: wire.Options{Batch: dead.Batch, Requeued: true, StateRev: rev}, priority: dead.Priority,
		// A fresh dedup id: the job's own id is within the window if it died fast.
		msgID: id + "-requeue-" + strconv.FormatUint(e.Revision(), 10),
	}
	if r := dead.PayloadRef; r != nil {
		// Its object was kept while it was dead.
		o.job.Payload = &wire.PayloadRef{Object: r.Object, Size: r.Size, Digest: r.Digest}
	}
	data := []byte(dead.Payload)
	var put *wire.PayloadRef // an object stored here, named by no message yet
	if o.job.Payload == nil && len(data) > c.cfg.InlinePayload {
		// Kept in its state, but too large for a message today: it
		// traveled in one under a larger inline limit (or before payloads
		// went by reference), and the job stream takes no such message
		// now.
		put, err = c.putPayload(ctx, dead.Type, id, data)
		o.job.Payload, data = put, nil
	}
	if err == nil {
		err = c.publish(ctx, id, dead.Type, data, o)
	}
	if err != nil {
		if put != nil {
			dctx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
			if derr := c.deletePayload(dctx, put); derr != nil {
				err = fmt.Errorf("%w; the object stored for it, %s, could not be removed: %v", err, put.Object, derr)
			}
			cancel()
		}
		if _, perr := c.kv.Update(ctx, id, cur.Value(), rev); perr != nil { // it is still dead
			return nil, fmt.Errorf("conductor: job %s: %w; its state reads queued, but it is dead (restoring it failed: %v)", id, err, perr)
		}
		return nil, fmt.Errorf("conductor: job %s: %w", id, err)
	}
	// Only this revision: if the job has died again already, it stays listed.
	err = retry(ctx, func(ctx context.Context) error {
		return kv.Delete(ctx, id, jetstream.LastRevision(e.Revision()))
	})
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return queued, fmt.Errorf("conductor: job %s is queued again, but it is still listed dead (remove it from the dead job index: %w)", id, err)
	}
	return queued, nil
}
