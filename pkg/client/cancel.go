package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Cancel cancels job id: a queued job will not run, and a running one is
// told to stop (the cancel op), then stopped (SIGTERM, SIGKILL) if it does
// not; either way it ends cancelled, and is not retried. The cancel is
// stored, so it holds across restarts and reaches the job even if no
// worker of its type runs now. A job that has ended is left alone
// (ErrJobEnded), an unknown one is ErrJobNotFound. Cancel returns the
// job's state at the time of the cancel.
func (c *Client) Cancel(ctx context.Context, id string) (*Job, error) {
	j, err := c.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.Status.Final() {
		return j, fmt.Errorf("%w: %s is %s", ErrJobEnded, id, j.Status)
	}
	kv, err := c.bucket(ctx, c.space.CancelBucket(), "cancel bucket")
	if err != nil {
		return nil, err
	}
	at, _ := json.Marshal(map[string]time.Time{"cancelled_at": time.Now().UTC()})
	if _, err := kv.Put(ctx, id, at); err != nil {
		return nil, fmt.Errorf("conductor: cancel job %s: %w", id, err)
	}
	return j, nil
}
