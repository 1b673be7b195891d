package conductor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// MaxBatchJobs bounds the jobs of one batch submitted over HTTP: its
// progress is counted from the states of all its jobs.
const MaxBatchJobs = 10_000

// ErrBatchNotFound is returned for an unknown batch id.
var ErrBatchNotFound = errors.New("conductor: batch not found")

// Batch is a batch of jobs of one type and its progress.
type Batch struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Total     int       `json:"total"`
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

// parseLines reads one JSON payload per non-blank line of body; an error
// reading body is returned wrapped.
func parseLines(body io.Reader, maxPayload int) ([]json.RawMessage, error) {
	var out []json.RawMessage
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, maxPayload+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		switch {
		case len(line) == 0:
			continue
		case len(line) > maxPayload:
			return nil, fmt.Errorf("line %d: payload is over the limit of %d bytes", n, maxPayload)
		case !json.Valid(line):
			return nil, fmt.Errorf("line %d: payload is not valid JSON", n)
		}
		out = append(out, bytes.Clone(line))
		if len(out) > MaxBatchJobs {
			return nil, fmt.Errorf("more than %d jobs; submit several batches", MaxBatchJobs)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read lines: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("no jobs: want one JSON payload per line")
	}
	return out, nil
}

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
	if o.key != "" || o.batch != "" {
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
	if err := c.count(ctx, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// count reads the status of every job of b, 16 at a time, and counts them.
// Only the status is decoded: a result may be large. The first failed read
// stops the others.
func (c *Client) count(ctx context.Context, b *Batch) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	statuses := make([]wire.Status, b.Total)
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

// batchEnds announces the end of each batch once. Job ends are counted
// per batch; once a batch's count reaches its total (or its total
// is not known yet), a goroutine checks it within batchCheckEvery: it
// counts the states of the batch's jobs and, if all have ended, records the
// end (a compare-and-set, so that one conductord announces it) and
// publishes it. A check that finds jobs still running resets the count to
// the jobs found ended, so ends missed while conductord was down are made
// up for. At start every batch is checked once.
type batchEnds struct {
	mu      sync.Mutex
	batches map[string]*batchCount
}

// batchCount is what batchEnds knows of one batch.
type batchCount struct {
	total   int  // its jobs; 0 until a check has read it
	ended   int  // its jobs known to have ended
	atCheck int  // ended when the last check began
	due     bool // to be checked at the next tick
	// foreign, if set, is when a job of the batch last ended after a
	// check found no record of it: not a batch of the HTTP API (RunBatch
	// counts its own). Its events are ignored until it has been quiet for
	// foreignFor.
	foreign time.Time
}

const (
	batchCheckEvery = 500 * time.Millisecond
	foreignFor      = 10 * time.Minute
)

func (e *batchEnds) get(id string) *batchCount {
	b := e.batches[id]
	if b == nil {
		b = &batchCount{}
		e.batches[id] = b
	}
	return b
}

// mark notes that a job of batch id ended.
func (e *batchEnds) mark(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.get(id)
	if !b.foreign.IsZero() {
		b.foreign = time.Now()
		return
	}
	b.ended++
	b.due = b.due || b.total == 0 || b.ended >= b.total
}

// check has batch id checked at the next tick.
func (e *batchEnds) check(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(id).due = true
}

// settle records what a check found of a batch that has not ended: its
// total, and the jobs it found ended plus the events counted during the
// check. Those may count a job twice, which only brings the next check
// early; counting one too few would leave the batch unannounced.
func (e *batchEnds) settle(id string, total, ended int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.get(id)
	b.total, b.ended = total, ended+b.ended-b.atCheck
	b.due = b.ended >= b.total // marks made before the total was known are settled too
}

// forget drops a batch that ended.
func (e *batchEnds) forget(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.batches, id)
}

// foreign notes that batch id has no record: it is not one of the HTTP API.
func (e *batchEnds) foreign(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(id).foreign = time.Now()
}

// take returns the batches due for a check.
func (e *batchEnds) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id, b := range e.batches {
		if !b.foreign.IsZero() {
			if time.Since(b.foreign) > foreignFor {
				delete(e.batches, id)
			}
			continue
		}
		if b.due {
			b.due, b.atCheck = false, b.ended
			ids = append(ids, id)
		}
	}
	return ids
}

// watchBatchEnds runs until ctx ends.
func (c *Conductor) watchBatchEnds(ctx context.Context) {
	if err := c.checkEveryBatch(ctx); err != nil && ctx.Err() == nil {
		c.log.Warn("list the batches to check their ends; each is checked when one of its jobs ends", "err", err)
	}
	t := time.NewTicker(batchCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range c.batchEnds.take() {
			if err := c.endBatch(ctx, id); err != nil && ctx.Err() == nil {
				c.log.Warn("check the end of a batch; trying again", "batch", id, "err", err)
				c.batchEnds.check(id)
			}
		}
	}
}

// checkEveryBatch has every recorded batch checked at the next tick: the
// events of those that ended while conductord was down are lost.
func (c *Conductor) checkEveryBatch(ctx context.Context) error {
	kv, err := c.client.bucket(ctx, c.space.BatchBucket(), "batch bucket")
	if err != nil {
		return err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = lister.Stop() }()
	for id := range lister.Keys() {
		c.batchEnds.check(id)
	}
	return nil
}

// endBatch announces batch id's end if all its jobs have ended and no one
// has announced it yet.
func (c *Conductor) endBatch(ctx context.Context, id string) error {
	kv, err := c.client.bucket(ctx, c.space.BatchBucket(), "batch bucket")
	if err != nil {
		return err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		c.batchEnds.foreign(id)
		return nil
	}
	if err != nil {
		return err
	}
	var b Batch
	if err := json.Unmarshal(e.Value(), &b); err != nil || !b.EndedAt.IsZero() {
		c.batchEnds.forget(id)
		return nil
	}
	if err := c.client.count(ctx, &b); err != nil {
		return err
	}
	if !b.Ended() {
		c.batchEnds.settle(id, b.Total, b.Succeeded+b.Dead+b.Cancelled)
		return nil
	}
	b.EndedAt = time.Now().UTC()
	rec, _ := json.Marshal(&b)
	_, err = kv.Update(ctx, id, rec, e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Changed since it was read: announced by another conductord, or
		// cut short by its submitter. The next check reads it again.
		c.batchEnds.check(id)
		return nil
	}
	if err != nil {
		return err // checked again
	}
	c.batchEnds.forget(id)
	c.log.Info("batch ended", "batch", id, "type", b.Type, "total", b.Total, "succeeded", b.Succeeded, "dead", b.Dead, "cancelled", b.Cancelled)
	return c.nc.Publish(c.space.BatchEvent(id), rec)
}

// status reads the status of job id, decoding nothing else of its state.
func (c *Client) status(ctx context.Context, id string) (wire.Status, error) {
	var h jobHead
	err := c.readState(ctx, id, &h)
	return h.Status, err
}
