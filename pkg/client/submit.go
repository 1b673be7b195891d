package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// SubmitOption tunes one Submit.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	key string
	// job are the options that travel with the job (internal/wire's codec):
	// batch, timeout, max attempts, not before, requeued.
	job wire.Options
	// id, if set, is the job's id (batches name their jobs).
	id       string
	priority Priority // "": normal
	// msgID, if set, is the publish's Nats-Msg-Id instead of the id.
	msgID string
	// mayHaveEnded: id may be that of a job that ended long enough ago
	// that its state has left the state bucket for the archive (a repeat
	// of a submission with a key).
	mayHaveEnded bool
}

// WithIdempotencyKey makes every submission of the same job type with the
// same key one job: the first creates it, later ones return its id and
// queue nothing, for as long as the job's state is retained. The first
// payload wins.
func WithIdempotencyKey(key string) SubmitOption {
	return func(o *submitOptions) { o.key = key }
}

// OnBehalfOf submits the job on behalf of credential id: its state names
// the credential (Job.Submitter), which may then read it. conductord sets
// it for the submissions of a credential; the Client's own credential
// must be one that may publish to the job stream.
func OnBehalfOf(id string) SubmitOption {
	return func(o *submitOptions) { o.job.Submitter = id }
}

// WithBatch adds the job to batch id.
func WithBatch(id string) SubmitOption {
	return func(o *submitOptions) { o.job.Batch = id }
}

// WithTimeout bounds each attempt of the job to d, instead of its pool's
// job_timeout: past it the worker is told to cancel the job, then stopped,
// and the job is retried (see docs/supervision.md).
func WithTimeout(d time.Duration) SubmitOption {
	return func(o *submitOptions) { o.job.Timeout = d }
}

// WithDelay makes the job wait d before it runs (a delayed job). It is
// queued at once; a worker takes it once d has passed.
func WithDelay(d time.Duration) SubmitOption {
	return func(o *submitOptions) { o.job.NotBefore = time.Now().Add(d) }
}

// WithPriority queues the job at priority p: a worker of its type takes a
// high job before any normal one and a normal one before any low one.
// Jobs are normal without it.
func WithPriority(p Priority) SubmitOption {
	return func(o *submitOptions) { o.priority = p }
}

// WithMaxAttempts gives the job its own attempt limit, n >= 1, instead of
// its pool's max_attempts.
func WithMaxAttempts(n int) SubmitOption {
	return func(o *submitOptions) { o.job.MaxAttempts = n }
}

// idempotencySpace seeds the name-based ids of idempotent submissions.
var idempotencySpace = uuid.MustParse("6f1d4c1e-2b7a-4b8e-9a51-0c3c2d6f9e10")

// IdempotentID is the id of the job of type typ submitted in namespace
// with idempotency key key: a name-based UUID of the three.
func IdempotentID(namespace, typ, key string) string {
	return uuid.NewSHA1(idempotencySpace, []byte(namespace+"\x00"+typ+"\x00"+key)).String()
}

// prepare checks a submission and returns its payload as JSON and its
// options.
func (c *Client) prepare(typ string, payload any, opts []SubmitOption) ([]byte, submitOptions, error) {
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := subject.Token("job type", typ); err != nil {
		return nil, o, fmt.Errorf("conductor: %w", err)
	}
	data, err := encodePayload(payload)
	if err != nil {
		return nil, o, err
	}
	if len(data) > c.cfg.MaxPayload {
		return nil, o, &PayloadTooLargeError{Size: len(data), Limit: c.cfg.MaxPayload}
	}
	if err := o.job.Check(); err != nil {
		return nil, o, fmt.Errorf("conductor: %w", err)
	}
	if o.priority, err = ParsePriority(string(o.priority)); err != nil {
		return nil, o, fmt.Errorf("conductor: %w", err)
	}
	if o.priority == PriorityNormal {
		o.priority = "" // as a job's state shows it
	}
	return data, o, nil
}

// Submit queues a job of type typ and returns its id once the job is
// durably queued. payload is encoded as JSON, unless it is a
// json.RawMessage or []byte, which must already be JSON.
func (c *Client) Submit(ctx context.Context, typ string, payload any, opts ...SubmitOption) (string, error) {
	data, o, err := c.prepare(typ, payload, opts)
	if err != nil {
		return "", err
	}
	if c.cfg.Submitter {
		id, _, err := c.submitVia(ctx, typ, data, o, 0)
		return id, err
	}
	return c.queue(ctx, typ, data, o, nil)
}

// awaited is a wait made by queue before it queues its job (SubmitWait):
// ch is the wait's, and queued the state queue created, if it did (the job
// is new): the wait needs no read of it.
type awaited struct {
	id     string // the job's
	ch     chan *Job
	queued *Job
}

// queue stores the state of a job and publishes it (Submit). With w, it
// first makes a wait for the job, which its caller must remove.
func (c *Client) queue(ctx context.Context, typ string, data []byte, o submitOptions, w *awaited) (string, error) {
	id := cmp.Or(o.id, uuid.Must(uuid.NewV7()).String())
	if o.key != "" {
		id, o.mayHaveEnded = IdempotentID(c.cfg.Namespace, typ, o.key), true
	}
	if w != nil {
		// Before anything is stored: no end of the job can come before.
		ch, err := c.addWaiter(id)
		if err != nil {
			return "", err
		}
		w.id, w.ch = id, ch
	}
	if o.mayHaveEnded {
		// The state bucket keeps a final state only for a while
		// (--archive-after): a repeat that comes later finds the job in
		// the archive, and must neither queue it again nor shadow its
		// final state with a new one. A job the bucket has is handled
		// below, without asking the archive.
		var inBucket bool
		err := retry(ctx, func(ctx context.Context) error {
			_, err := c.kv.Get(ctx, id)
			inBucket = err == nil
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return "", fmt.Errorf("conductor: look up job %s: %w", id, err)
		}
		if !inBucket {
			switch _, err := c.archived(ctx, id); {
			case err == nil:
				return id, nil
			case !errors.Is(err, ErrJobNotFound):
				return "", fmt.Errorf("conductor: look up job %s, which may have ended: %w", id, err)
			}
		}
	}
	// Record first, then queue: the state's revision travels with the job,
	// and its first attempt's write expects it, so that a late write never
	// replaces a later state (docs/reliability.md, "Fencing"). A failed
	// publish takes the state back; the caller's cancelling cannot cut the
	// pair in half.
	ctx = context.WithoutCancel(ctx)
	now := time.Now().UTC()
	queued := &Job{ID: id, Type: typ, Status: StatusQueued, Batch: o.job.Batch, Priority: o.priority, Submitter: o.job.Submitter, CreatedAt: now, UpdatedAt: now}
	state, _ := json.Marshal(queued)
	rev, err := c.createState(ctx, id, state)
	if err == nil && w != nil {
		w.queued = queued
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		// A job known by its state is never queued twice, whenever the
		// repeat comes; but one whose state was stored by a submission
		// cut before its publish is published now.
		prev, perr := c.kv.Get(ctx, id)
		if perr != nil {
			return "", fmt.Errorf("conductor: look up job %s: %w", id, perr)
		}
		if !unpublished(prev, now) {
			return id, nil
		}
		rev, err = prev.Revision(), nil
	}
	if err != nil {
		return "", fmt.Errorf("conductor: store the state of job %s: %w", id, err)
	}
	o.job.StateRev = rev
	if len(data) > c.cfg.InlinePayload {
		// Too large for its message: passed by reference.
		ref, err := c.putPayload(ctx, typ, id, data)
		if err != nil {
			return "", c.takeBack(ctx, id, rev, nil, err)
		}
		o.job.Payload, data = ref, nil
	}
	dup, err := c.publishOnce(ctx, id, typ, data, o)
	if err != nil {
		return "", c.takeBack(ctx, id, rev, o.job.Payload, err)
	}
	if dup && o.job.Payload != nil {
		// The stream had a message of this job before this publish (a
		// repeat of a submission with its key, made while the job is
		// queued): that message names another object, and this one no
		// message names.
		dctx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
		defer cancel()
		if err := c.deletePayload(dctx, o.job.Payload); err != nil && c.cfg.Logger != nil {
			c.cfg.Logger.Warn("remove the payload object of a repeated submission, which no job names", "job", id, "object", o.job.Payload.Object, "err", err)
		}
	}
	return id, nil
}

// takeBack removes what queue stored of job id before its publish failed
// with err: its queued state at rev and its payload's object (ref, if
// any). It returns err, with what could not be taken back.
func (c *Client) takeBack(ctx context.Context, id string, rev uint64, ref *wire.PayloadRef, err error) error {
	dctx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
	defer cancel()
	if derr := c.kv.Delete(dctx, id, jetstream.LastRevision(rev)); derr != nil && !errors.Is(derr, jetstream.ErrKeyRevisionMismatch) {
		err = fmt.Errorf("%w; its queued state could not be taken back: %v", err, derr)
	}
	if ref != nil {
		// Whether or not its state went: no state names it now, or it
		// would stay for good (the sweep removes the objects of ended
		// jobs only).
		if derr := c.deletePayload(dctx, ref); derr != nil {
			err = fmt.Errorf("%w; its payload's object %s could not be removed: %v", err, ref.Object, derr)
		}
	}
	return err
}

// RepublishWithin is how young a state of a job that no worker has touched
// must be for a repeated submission to publish the job again: well within
// the stream's deduplication window (2 minutes by default; conductord
// refuses one under twice this), so that a copy of a job already queued
// is dropped by the stream.
const RepublishWithin = time.Minute

// unpublished reports whether e may be the state of a submission cut
// between storing its state and publishing its job: queued, touched by no
// worker, and stored less than RepublishWithin before now.
func unpublished(e jetstream.KeyValueEntry, now time.Time) bool {
	var j Job
	if json.Unmarshal(e.Value(), &j) != nil {
		return false
	}
	return j.Status == StatusQueued && j.Holder == "" && j.Attempts == 0 && j.Skipped == 0 &&
		now.Sub(e.Created()) < RepublishWithin
}

// createState stores the queued state of a new job and returns its
// revision. A request lost to a server restart is made again; a state that
// exists already is jetstream.ErrKeyExists.
func (c *Client) createState(ctx context.Context, id string, state []byte) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rev uint64
	err := retry(ctx, func(ctx context.Context) error {
		var err error
		rev, err = c.kv.Create(ctx, id, state)
		if err != nil && c.refused(subject.KV(c.kv.Bucket(), id)) {
			return fmt.Errorf("%w: this credential may not store job states (a submitter's Client needs Config.Submitter)", ErrForbidden)
		}
		return err
	})
	return rev, err
}

func (c *Client) publish(ctx context.Context, id, typ string, data []byte, o submitOptions) error {
	_, err := c.publishOnce(ctx, id, typ, data, o)
	return err
}

// publishOnce publishes the job as publish does, and reports whether the
// stream had a message of the same Nats-Msg-Id before it: its first
// attempt was acked as a duplicate. A later attempt acked so may be the
// copy of an earlier one whose ack was lost, and is not reported.
func (c *Client) publishOnce(ctx context.Context, id, typ string, data []byte, o submitOptions) (dup bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m := nats.NewMsg(c.space.JobAt(typ, string(o.priority)))
	m.Header.Set(names.HeaderJobID, id)
	m.Header.Set(names.HeaderMsgID, cmp.Or(o.msgID, id))
	o.job.Encode(m.Header)
	m.Data = data
	// An ack lost to a server restart would hold a single publish for the
	// whole timeout: publish again every publishAttemptTimeout instead.
	// The same Nats-Msg-Id makes the copies one job.
	attempts := 0
	err := retry(ctx, func(ctx context.Context) error {
		attempts++
		ack, err := c.js.PublishMsg(ctx, m)
		dup = err == nil && ack.Duplicate && attempts == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("conductor: queue job: %w", err)
	}
	return dup, nil
}

// retry calls f with a deadline of publishAttemptTimeout until it
// succeeds, fails for good (not retryable), or ctx ends: a request lost to
// a server restart would otherwise wait out the whole of ctx.
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
		err := f(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(publishRetryDelay):
		}
	}
}

// bucket opens the key-value bucket name once; what names it in errors.
func (c *Client) bucket(ctx context.Context, name, what string) (jetstream.KeyValue, error) {
	c.bucketsMu.Lock()
	defer c.bucketsMu.Unlock()
	if kv, ok := c.buckets[name]; ok {
		return kv, nil
	}
	kv, err := c.js.KeyValue(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("conductor: open the %s: %w", what, err)
	}
	if c.buckets == nil {
		c.buckets = map[string]jetstream.KeyValue{}
	}
	c.buckets[name] = kv
	return kv, nil
}

// Timing of Submit's publish: each attempt waits publishAttemptTimeout for
// its ack, and publishRetryDelay separates attempts, within 30s in all.
const (
	publishAttemptTimeout = 2 * time.Second
	publishRetryDelay     = 50 * time.Millisecond
)

// retryable reports whether a failed JetStream request (a publish, a
// lookup) may succeed if made again: no answer in time, no stream yet (a
// restarting server), or a connection being re-made.
func retryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected)
}

func encodePayload(payload any) ([]byte, error) {
	var data []byte
	switch p := payload.(type) {
	case json.RawMessage:
		data = p
	case []byte:
		data = p
	default:
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPayload, err)
		}
		return b, nil
	}
	if !json.Valid(data) {
		return nil, ErrBadPayload
	}
	return data, nil
}
