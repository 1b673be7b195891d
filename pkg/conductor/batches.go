package conductor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

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
		if len(out) > client.MaxBatchJobs {
			return nil, fmt.Errorf("more than %d jobs; submit several batches", client.MaxBatchJobs)
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

// batchEnds announces the end of each batch once. Job ends are counted
// per batch; once a batch's count reaches its total (or its total
// is not known yet), its goroutine checks it within batchCheckEvery: it
// counts the states of the batch's jobs and, if all have ended, records the
// end (a compare-and-set, so that one conductord announces it) and
// publishes it. A check that finds jobs still running resets the count to
// the jobs found ended, so ends missed while conductord was down are made
// up for. At start every batch is checked once.
//
// It is a startstop.Service: its goroutine runs the checks from Start
// until Stop. It owns batches; mu guards it: the subscription to the job
// ends marks (mark), the goroutine takes and settles.
type batchEnds struct {
	*startstop.Func                    // runs run
	kv              jetstream.KeyValue // the batch bucket
	client          *client.Client     // counts a batch's job states
	nc              *nats.Conn         // publishes the batch events
	space           subject.Space
	log             *slog.Logger
	stall           time.Duration // client.BatchStall; tests shorten it
	lead            *leadership   // the checks run while this conductord leads

	mu      sync.Mutex
	batches map[string]*batchCount
	// foreignN counts the batches held foreign, at most maxForeign: a
	// host's ends name batches as they like.
	foreignN int
}

// maxForeign bounds the batches with no record held (batchCount.foreign);
// past it, one found without a record is forgotten at once (its next end
// has it checked again).
const maxForeign = 10_000

func newBatchEnds(kv jetstream.KeyValue, cl *client.Client, nc *nats.Conn, space subject.Space, log *slog.Logger, stall time.Duration) *batchEnds {
	e := &batchEnds{kv: kv, client: cl, nc: nc, space: space, log: log, stall: stall, batches: map[string]*batchCount{}}
	e.Func = startstop.NewFunc(e.run)
	return e
}

// batchCount is what batchEnds knows of one batch.
type batchCount struct {
	total   int       // its jobs; 0 until a check has read it
	ended   int       // its jobs known to have ended
	atCheck int       // ended when the last check began
	due     bool      // to be checked at the next tick
	later   time.Time // if set, to be checked at the first tick after it
	// foreign, if set, is when a job of the batch last ended after a
	// check found no record of it: not a batch of the HTTP API (RunBatch
	// counts its own). Its events are ignored until it has been quiet for
	// foreignFor.
	foreign time.Time
}

const (
	batchCheckEvery = 500 * time.Millisecond
	batchCheckStall = 10 * time.Second
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

// checkLater has batch id checked at the first tick after d.
func (e *batchEnds) checkLater(id string, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.get(id).later = time.Now().Add(d)
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
	e.dropLocked(id)
}

// dropLocked drops batch id, counting it out of the foreign ones.
func (e *batchEnds) dropLocked(id string) {
	if b := e.batches[id]; b != nil && !b.foreign.IsZero() {
		e.foreignN--
	}
	delete(e.batches, id)
}

// foreign notes that batch id has no record: it is not one of the HTTP API.
func (e *batchEnds) foreign(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.get(id)
	if b.foreign.IsZero() {
		if e.foreignN >= maxForeign {
			delete(e.batches, id)
			return
		}
		e.foreignN++
	}
	b.foreign = time.Now()
}

// take returns the batches due for a check.
func (e *batchEnds) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id, b := range e.batches {
		if !b.foreign.IsZero() {
			if time.Since(b.foreign) > foreignFor {
				e.dropLocked(id)
			}
			continue
		}
		if b.due || !b.later.IsZero() && time.Now().After(b.later) {
			b.due, b.later, b.atCheck = false, time.Time{}, b.ended
			ids = append(ids, id)
		}
	}
	return ids
}

// run checks the batches in each term this conductord leads.
func (e *batchEnds) run(ctx context.Context) { e.lead.each(ctx, e.term) }

// term checks every batch once, then those due at each tick, until ctx
// ends.
func (e *batchEnds) term(ctx context.Context) {
	if err := e.checkEveryBatch(ctx); err != nil && ctx.Err() == nil {
		e.log.Warn("list the batches to check their ends; each is checked when one of its jobs ends", "err", err)
	}
	t := time.NewTicker(batchCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range e.take() {
			if err := e.endBatch(ctx, id); err != nil && ctx.Err() == nil {
				e.log.Warn("check the end of a batch; trying again", "batch", id, "err", err)
				e.check(id)
			}
		}
	}
}

// checkEveryBatch has every recorded batch checked at the next tick: the
// events of those that ended while conductord was down are lost.
func (e *batchEnds) checkEveryBatch(ctx context.Context) error {
	lister, err := e.kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = lister.Stop() }()
	for id := range lister.Keys() {
		e.check(id)
	}
	return nil
}

// endBatch announces batch id's end if all its jobs have ended and no one
// has announced it yet.
func (e *batchEnds) endBatch(ctx context.Context, id string) error {
	rev, err := e.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		e.foreign(id)
		return nil
	}
	if err != nil {
		return err
	}
	var b client.Batch
	if err := json.Unmarshal(rev.Value(), &b); err != nil || !b.EndedAt.IsZero() {
		e.forget(id)
		return nil
	}
	if b.Submitting {
		return e.stalled(ctx, &b, rev)
	}
	if err := e.client.CountBatch(ctx, &b); err != nil {
		return err
	}
	if !b.Ended() {
		e.settle(id, b.Total, b.Succeeded+b.Dead+b.Cancelled)
		return nil
	}
	b.EndedAt = time.Now().UTC()
	rec, _ := json.Marshal(&b)
	_, err = e.kv.Update(ctx, id, rec, rev.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Changed since it was read: announced by another conductord, or
		// cut short by its submitter. The next check reads it again.
		e.check(id)
		return nil
	}
	if err != nil {
		return err // checked again
	}
	e.forget(id)
	e.log.Info("batch ended", "batch", id, "type", b.Type, "total", b.Total, "succeeded", b.Succeeded, "dead", b.Dead, "cancelled", b.Cancelled)
	return e.nc.Publish(e.space.BatchEvent(id), rec)
}

// stalled checks a batch whose jobs are still being queued: once its
// record has been still for e.stall (client.BatchStall), its submitter is taken to
// be gone, and the batch is cut to the jobs queued, so that it ends when
// they have (its submitter, with the batch's key, can still complete it).
// Until then it is checked again every batchCheckStall.
func (e *batchEnds) stalled(ctx context.Context, b *client.Batch, rev jetstream.KeyValueEntry) error {
	if time.Since(rev.Created()) < e.stall {
		e.checkLater(b.ID, min(batchCheckStall, e.stall))
		return nil
	}
	n, err := e.client.QueuedPrefix(ctx, b)
	if err != nil {
		return err
	}
	if n == 0 {
		err = e.kv.Delete(ctx, b.ID, jetstream.LastRevision(rev.Revision()))
	} else {
		total := b.Total
		b.Total, b.Submitting = n, false
		rec, _ := json.Marshal(b)
		_, err = e.kv.Update(ctx, b.ID, rec, rev.Revision())
		if err == nil {
			e.log.Warn("batch cut to the jobs queued: its submission stalled", "batch", b.ID, "type", b.Type, "queued", n, "of", total)
		}
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		e.check(b.ID) // its submitter is alive after all
		return nil
	}
	if err == nil {
		e.check(b.ID)
	}
	return err
}
