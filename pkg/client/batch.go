package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	// Counts per status, read from the jobs' states when asked for.
	Queued    int `json:"queued"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Dead      int `json:"dead"`
	Cancelled int `json:"cancelled"`
}

// Ended reports whether every job of the batch has ended.
func (b *Batch) Ended() bool { return b.Succeeded+b.Dead+b.Cancelled == b.Total }

// batchJobID is the id of job i of batch id.
func batchJobID(id string, i int) string { return id + "-" + strconv.Itoa(i) }

// SubmitBatch queues payloads as one batch of jobs of type typ and returns
// the batch. Its jobs are named <batch id>-<index>. conductord announces
// the batch's end once (subject conductor.<ns>.events.batch.<id>.end);
// Batch reports its progress. opts apply to every job (an idempotency key
// would make them one job, and is refused).
func (c *Client) SubmitBatch(ctx context.Context, typ string, payloads []json.RawMessage, opts ...SubmitOption) (*Batch, error) {
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
	if o.key != "" || o.job.Batch != "" {
		return nil, errors.New("conductor: a batch takes no idempotency key or batch id of its own jobs")
	}
	kv, err := c.bucket(ctx, c.space.BatchBucket(), "batch bucket")
	if err != nil {
		return nil, err
	}
	b := &Batch{ID: uuid.Must(uuid.NewV7()).String(), Type: typ, Total: len(payloads), CreatedAt: time.Now().UTC()}
	rec, _ := json.Marshal(b)
	if _, err := kv.Create(ctx, b.ID, rec); err != nil {
		return nil, fmt.Errorf("conductor: record batch: %w", err)
	}
	for i, p := range payloads {
		jobOpts := append(opts[:len(opts):len(opts)], WithBatch(b.ID), func(o *submitOptions) { o.id = batchJobID(b.ID, i) })
		if _, err := c.Submit(ctx, typ, p, jobOpts...); err != nil {
			return nil, c.cutBatch(kv, b, i, fmt.Errorf("conductor: batch %s: job %d: %w", b.ID, i, err))
		}
	}
	b.Queued = b.Total
	return b, nil
}

// cutBatch makes batch b end with its first n jobs, those queued before
// job n failed to be: its record's total becomes n (or, with none queued,
// the record goes), so that it ends when they have. err says why; the
// result adds what was queued, and whether the record could be mended.
func (c *Client) cutBatch(kv jetstream.KeyValue, b *Batch, n int, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mend error
	if n == 0 {
		mend = kv.Delete(ctx, b.ID)
		err = fmt.Errorf("%w (no job was queued)", err)
	} else {
		b.Total = n
		rec, _ := json.Marshal(b)
		_, mend = kv.Put(ctx, b.ID, rec)
		err = fmt.Errorf("%w (jobs 0 to %d are queued: the batch holds those)", err, n-1)
	}
	if mend != nil {
		err = fmt.Errorf("%w; recording that failed too, so the batch will not end: %v", err, mend)
	}
	return err
}

// Batch returns batch id with its progress, counted from its jobs' states
// while it runs, and as recorded at its end once it has ended.
func (c *Client) Batch(ctx context.Context, id string) (*Batch, error) {
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
