package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// BatchAbort is what AbortBatch did to a batch's jobs.
type BatchAbort struct {
	Batch string `json:"batch"`
	// Cancelled counts the jobs it cancelled: a queued one ends cancelled
	// at once, a running one once its worker has stopped it.
	Cancelled int `json:"cancelled"`
	// Ended counts the jobs that had ended already, left as they were.
	Ended int `json:"ended"`
	// Missing counts the jobs not queued (yet): a batch whose submission
	// is still going on may queue them after (abort it again then).
	Missing int `json:"missing"`
}

// abortParallel bounds the cancels of an AbortBatch on their way at once.
const abortParallel = 32

// AbortBatch cancels every job of batch id that has not ended
// (okanjo's abort, for one batch): none of them runs from now on, a
// running one is told to stop, and each ends cancelled, its state kept
// (GET /v1/jobs/{id}), so that nothing is lost: what was done is in the
// jobs that ended, what was not is in those cancelled. The batch ends
// once they all have. Aborting a batch again does nothing more.
func (c *Client) AbortBatch(ctx context.Context, id string) (*BatchAbort, error) {
	b, err := c.Batch(ctx, id)
	if err != nil {
		return nil, err
	}
	res := &BatchAbort{Batch: b.ID}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range min(abortParallel, b.Total) {
		wg.Go(func() {
			for i := range next {
				_, err := c.Cancel(ctx, batchJobID(b.ID, i))
				mu.Lock()
				switch {
				case err == nil:
					res.Cancelled++
				case errors.Is(err, ErrJobEnded):
					res.Ended++
				case errors.Is(err, ErrJobNotFound):
					res.Missing++
				case first == nil:
					first = err
				}
				mu.Unlock()
			}
		})
	}
	for i := range b.Total {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		return res, fmt.Errorf("conductor: abort batch %s: %w", id, first)
	}
	return res, nil
}
