package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
)

// MaxBatchJobs bounds the jobs of one batch submitted over HTTP: its
// progress is counted from the states of all its jobs.
const MaxBatchJobs = 10_000

// Batch is a batch of jobs of one type and its progress, as
// GET /v1/batches/{id} serves it.
type Batch struct {
	// ID names the batch; its jobs are named <ID>-<index>.
	ID string `json:"id"`
	// Type is the job type of every job of the batch.
	Type string `json:"type"`
	// Total is the number of jobs in the batch.
	Total int `json:"total"`
	// CreatedAt is when the batch was submitted.
	CreatedAt time.Time `json:"created_at"`
	// EndedAt is set once every job of the batch has ended.
	EndedAt time.Time `json:"ended_at,omitzero"`
	// Submitting is set while the batch's jobs are being queued: it does
	// not end before they all are. A submission cut short (a crash) is
	// completed by submitting the batch again with the same idempotency
	// key; or, once it has been still for BatchStall, conductord cuts the
	// batch to the jobs queued (Total).
	Submitting bool `json:"submitting,omitempty"`
	// Counts per status, read from the jobs' states when asked for.
	Queued    int `json:"queued"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Dead      int `json:"dead"`
	Cancelled int `json:"cancelled"`
}

// Ended reports whether every job of the batch has ended.
func (b *Batch) Ended() bool { return !b.Submitting && b.Succeeded+b.Dead+b.Cancelled == b.Total }

// batchJobID is the id of job i of batch id.
func batchJobID(id string, i int) string { return id + "-" + strconv.Itoa(i) }

// SubmitBatch queues payloads as one batch of jobs of type typ and returns
// the batch. Its jobs are named <batch id>-<index>. conductord announces
// the batch's end once (subject conductor.<ns>.events.batch.<id>.end);
// Batch reports its progress. opts apply to every job, but for
// WithIdempotencyKey, which names the batch: submitting again with the
// same key and type, after an error or a crash, completes the same batch
// without queueing any of its jobs twice, or returns it if it was whole.
func (c *Client) SubmitBatch(ctx context.Context, typ string, payloads []json.RawMessage, opts ...SubmitOption) (*Batch, error) {
	if err := c.forOperators("SubmitBatch"); err != nil {
		return nil, err
	}
	if err := subject.Token("job type", typ); err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	if len(payloads) == 0 || len(payloads) > MaxBatchJobs {
		return nil, fmt.Errorf("conductor: a batch holds 1 to %d jobs, not %d", MaxBatchJobs, len(payloads))
	}
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.job.Batch != "" {
		return nil, errors.New("conductor: a batch takes no batch id of its own jobs")
	}
	kv, err := c.bucket(ctx, c.space.BatchBucket(), "batch bucket")
	if err != nil {
		return nil, err
	}
	r, err := c.openBatch(ctx, kv, typ, o.key, len(payloads))
	if err != nil || !r.b.Submitting {
		return r.batch(), err
	}
	// The batch's key names the batch, not its jobs: each job is named by
	// its index, which makes a repeated submission queue it once.
	noKey := func(o *submitOptions) { o.key = "" }
	for i, p := range payloads {
		if i > 0 && i%batchTouchEvery == 0 {
			if err := r.touch(ctx, kv); errors.Is(err, errBatchWhole) {
				return r.batch(), nil // a repeat of this submission completed it
			} else if err != nil {
				return nil, c.cutBatch(kv, r, i, fmt.Errorf("conductor: batch %s: %w", r.b.ID, err))
			}
		}
		jobOpts := append(opts[:len(opts):len(opts)], noKey, WithBatch(r.b.ID), func(o *submitOptions) {
			o.id, o.mayHaveEnded = batchJobID(r.b.ID, i), r.reopened
		})
		if _, err := c.Submit(ctx, typ, p, jobOpts...); err != nil {
			return nil, c.cutBatch(kv, r, i, fmt.Errorf("conductor: batch %s: job %d: %w", r.b.ID, i, err))
		}
	}
	r.b.Submitting = false
	err = r.write(ctx, kv)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Changed since: a repeat of this submission may have completed
		// it, or conductord cut it.
		switch err = r.touch(ctx, kv); {
		case errors.Is(err, errBatchWhole):
			return r.batch(), nil
		case err == nil:
			r.b.Submitting = false
			err = r.write(ctx, kv)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("conductor: batch %s: every job is queued, but the batch could not be sealed (submit it again with the same key): %w", r.b.ID, err)
	}
	b := r.batch()
	b.Queued = b.Total
	return b, nil
}

// BatchStall is how long a batch may be Submitting without its record
// changing before conductord cuts it to the jobs queued: its submitter
// touches it every batchTouchEvery jobs.
const BatchStall = 2 * time.Minute

// batchTouchEvery is how many jobs a submitter queues between touches of
// its batch's record.
const batchTouchEvery = 500

// ErrBatchMismatch is returned by SubmitBatch for an idempotency key that
// names a batch of another size.
var ErrBatchMismatch = errors.New("conductor: the idempotency key names a batch of another size")

// batchRecord is a batch's record as read or written, with its revision.
type batchRecord struct {
	b   Batch
	rev uint64
	// reopened: the batch existed, and its submission is being completed;
	// its jobs may have ended long ago.
	reopened bool
}

func (r *batchRecord) batch() *Batch {
	if r == nil {
		return nil
	}
	b := r.b
	return &b
}

// write stores the record if it is still at its revision.
func (r *batchRecord) write(ctx context.Context, kv jetstream.KeyValue) error {
	rec, _ := json.Marshal(&r.b)
	rev, err := kv.Update(ctx, r.b.ID, rec, r.rev)
	if err != nil {
		return err
	}
	r.rev = rev
	return nil
}

// touch rewrites the record, so that conductord sees the submission is
// alive; if conductord cut it meanwhile, it is opened again, and if a
// repeat of the submission completed it, touch is errBatchWhole.
func (r *batchRecord) touch(ctx context.Context, kv jetstream.KeyValue) error {
	err := r.write(ctx, kv)
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return err
	}
	e, err := kv.Get(ctx, r.b.ID)
	if err != nil {
		return err
	}
	total := r.b.Total
	if err := json.Unmarshal(e.Value(), &r.b); err != nil {
		return err
	}
	r.rev = e.Revision()
	if !r.b.Submitting && r.b.Total == total {
		return errBatchWhole
	}
	r.b.Total, r.b.Submitting, r.b.EndedAt = total, true, time.Time{}
	return r.write(ctx, kv)
}

// errBatchWhole is touch's error for a batch that a repeat of its
// submission completed meanwhile: nothing is left to do.
var errBatchWhole = errors.New("conductor: batch completed by another submission")

// openBatch creates the record of a new batch of n jobs, Submitting. With
// a key, the batch may exist: a whole one is returned as it is (not
// Submitting); one whose submission was cut, or cut short by conductord,
// is opened again to be completed.
func (c *Client) openBatch(ctx context.Context, kv jetstream.KeyValue, typ, key string, n int) (*batchRecord, error) {
	id := uuid.Must(uuid.NewV7()).String()
	if key != "" {
		id = uuid.NewSHA1(idempotencySpace, []byte(c.cfg.Namespace+"\x00batch\x00"+typ+"\x00"+key)).String()
	}
	r := &batchRecord{b: Batch{ID: id, Type: typ, Total: n, CreatedAt: time.Now().UTC(), Submitting: true}}
	rec, _ := json.Marshal(&r.b)
	rev, err := kv.Create(ctx, id, rec)
	if err == nil {
		r.rev = rev
		return r, nil
	}
	if key == "" || !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("conductor: record batch: %w", err)
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("conductor: read batch %s: %w", id, err)
	}
	var was Batch
	if err := json.Unmarshal(e.Value(), &was); err != nil {
		return nil, fmt.Errorf("conductor: decode batch %s: %w", id, err)
	}
	r.b, r.rev = was, e.Revision()
	switch {
	case was.Type != typ:
		return nil, fmt.Errorf("%w: batch %s is of type %s", ErrBatchMismatch, id, was.Type)
	case was.Total == n && !was.Submitting:
		return r, nil // whole: nothing to queue
	case was.Total > n:
		return nil, fmt.Errorf("%w: batch %s holds %d jobs, not %d", ErrBatchMismatch, id, was.Total, n)
	}
	// Cut short (Total < n, by an error or by conductord) or cut by a
	// crash (Submitting): queue every job again, each once.
	r.b.Total, r.b.Submitting, r.b.EndedAt = n, true, time.Time{}
	r.reopened = true
	if err := r.write(ctx, kv); err != nil {
		return nil, fmt.Errorf("conductor: reopen batch %s: %w", id, err)
	}
	return r, nil
}

// cutBatch makes the batch of r end with its first n jobs, those queued
// before job n failed to be: its record's total becomes n (or, with none
// queued, the record goes), so that it ends when they have. err says why;
// the result adds what was queued, and whether the record could be mended.
func (c *Client) cutBatch(kv jetstream.KeyValue, r *batchRecord, n int, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mend error
	if n == 0 {
		mend = kv.Delete(ctx, r.b.ID, jetstream.LastRevision(r.rev))
		err = fmt.Errorf("%w (no job was queued)", err)
	} else {
		r.b.Total, r.b.Submitting = n, false
		mend = r.write(ctx, kv)
		err = fmt.Errorf("%w (jobs 0 to %d are queued: the batch holds those; submit it again with its idempotency key to complete it)", err, n-1)
	}
	if mend != nil {
		err = fmt.Errorf("%w; recording that failed too (conductord cuts the batch once it has been still for %v): %v", err, BatchStall, mend)
	}
	return err
}

// QueuedPrefix returns how many of batch b's jobs, from the first, have a
// state: its submitter queues them in order, so those are the jobs
// queued, but for the last, which a crash may have cut between its state
// and its message. It makes about log2(b.Total) reads.
func (c *Client) QueuedPrefix(ctx context.Context, b *Batch) (int, error) {
	if err := c.forOperators("QueuedPrefix"); err != nil {
		return 0, err
	}
	var failed error
	n := sort.Search(b.Total, func(i int) bool {
		if failed != nil {
			return true
		}
		_, err := c.status(ctx, batchJobID(b.ID, i))
		if errors.Is(err, ErrJobNotFound) {
			return true
		}
		failed = err
		return failed != nil
	})
	return n, failed
}

// Batch returns batch id with its progress, counted from its jobs' states
// while it runs, and as recorded at its end once it has ended.
func (c *Client) Batch(ctx context.Context, id string) (*Batch, error) {
	if err := c.forOperators("Batch"); err != nil {
		return nil, err
	}
	if subject.Token("batch id", id) != nil {
		return nil, ErrBatchNotFound
	}
	kv, err := c.bucket(ctx, c.space.BatchBucket(), "batch bucket")
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrBatchNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("conductor: read batch %s: %w", id, err)
	}
	var b Batch
	if err := json.Unmarshal(e.Value(), &b); err != nil {
		return nil, fmt.Errorf("conductor: decode batch %s: %w", id, err)
	}
	if !b.EndedAt.IsZero() {
		return &b, nil // its final counts were recorded with its end
	}
	if err := c.CountBatch(ctx, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// CountBatch sets b's counts (Queued, Running, Succeeded, Failed, Dead,
// Cancelled) from the states of its jobs, read 16 at a time; b.ID and
// b.Total name them. Only the status is decoded: a result may be large. The
// first failed read stops the others. Batch calls it for a batch that has
// not ended; a program that holds a batch's record (conductord, which
// compares and sets it) calls it to count without reading the record again.
func (c *Client) CountBatch(ctx context.Context, b *Batch) error {
	if err := c.forOperators("CountBatch"); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	statuses := make([]Status, b.Total)
	errs := make(chan error, 1)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range next {
				st, err := c.status(ctx, batchJobID(b.ID, i))
				switch {
				case errors.Is(err, ErrJobNotFound):
					statuses[i] = StatusQueued // published by a submitter that has not written it yet
				case err != nil:
					select {
					case errs <- err:
					default:
					}
					cancel()
				default:
					statuses[i] = st
				}
			}
		})
	}
feed:
	for i := range b.Total {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("conductor: count batch %s: %w", b.ID, err)
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("conductor: count batch %s: %w", b.ID, err)
	}
	b.Queued, b.Running, b.Succeeded, b.Failed, b.Dead, b.Cancelled = 0, 0, 0, 0, 0, 0
	for _, st := range statuses {
		switch st {
		case StatusRunning:
			b.Running++
		case StatusSucceeded:
			b.Succeeded++
		case StatusFailed:
			b.Failed++
		case StatusDead:
			b.Dead++
		case StatusCancelled:
			b.Cancelled++
		default:
			b.Queued++
		}
	}
	return nil
}

// status reads the status of job id, decoding nothing else of its state.
func (c *Client) status(ctx context.Context, id string) (Status, error) {
	var h jobHead
	err := c.readState(ctx, id, &h)
	return h.Status, err
}
