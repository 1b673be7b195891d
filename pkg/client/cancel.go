package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// Cancel cancels job id: a queued job will not run, and a running one is
// told to stop (the cancel op), then stopped (SIGTERM, SIGKILL) if it does
// not; either way it ends cancelled, and is not retried. The cancel is
// stored, so it holds across restarts and reaches the job even if no
// worker of its type runs now. A job that has ended is left alone
// (ErrJobEnded), an unknown one is ErrJobNotFound.
//
// A job that no worker runs (queued, held by a host, or failed and waiting
// for its retry) ends cancelled at once: Cancel stores its final state and
// announces its end, and returns that state. Otherwise Cancel returns the
// job's state at the time of the cancel, and the job reads cancelled once
// its worker has stopped.
func (c *Client) Cancel(ctx context.Context, id string) (*Job, error) {
	if err := c.forOperators("Cancel"); err != nil {
		return nil, err
	}
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
	// The cancel is stored first: a host that takes the job from now on
	// does not run it, and one that runs it cuts it short.
	at, _ := json.Marshal(map[string]time.Time{"cancelled_at": time.Now().UTC()})
	if _, err := kv.Put(ctx, id, at); err != nil {
		return nil, fmt.Errorf("conductor: cancel job %s: %w", id, err)
	}
	if j.Status == StatusRunning {
		return j, nil
	}
	ended, err := c.endCancelled(ctx, id)
	switch {
	case err != nil:
		return j, err
	case ended != nil:
		return ended, nil
	}
	return j, nil
}

// endCancelled stores the state of job id, cancelled, if no worker runs it
// (queued, or failed and waiting for its retry), and announces its end as
// workerd does: to conductord, which counts and archives it, and to the
// job's waiters. It returns nil if a worker runs the job (its state says
// so): the worker's cancel ends it. The write is conditional on the state
// read, so it never passes over a worker's: whichever is stored first wins,
// and the job's message, when a host takes it, is acked without running
// (the host reads a cancelled job's state first).
func (c *Client) endCancelled(ctx context.Context, id string) (*Job, error) {
	for range 4 {
		e, err := c.getState(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil // archived: it has ended
		}
		if err != nil {
			return nil, fmt.Errorf("conductor: cancel job %s: read its state: %w", id, err)
		}
		var st wire.Job
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return nil, fmt.Errorf("conductor: cancel job %s: decode its state: %w", id, err)
		}
		if st.Status != wire.StatusQueued && st.Status != wire.StatusFailed {
			return nil, nil
		}
		reason := "cancelled while queued"
		if st.Status == wire.StatusFailed {
			reason = "cancelled while waiting for its retry"
			if st.Error != "" {
				reason += " (last error: " + st.Error + ")"
			}
		}
		st.Status, st.Error, st.UpdatedAt = wire.StatusCancelled, reason, time.Now().UTC()
		data, err := st.AppendJSON(nil)
		if err != nil {
			return nil, fmt.Errorf("conductor: cancel job %s: encode its state: %w", id, err)
		}
		err = c.writeFinal(ctx, id, data, e.Revision())
		if isConflict(err) {
			continue // written meanwhile: read it again
		}
		if err != nil {
			return nil, fmt.Errorf("conductor: cancel job %s: store its state: %w", id, err)
		}
		if err := c.announceEnd(ctx, &st, data); err != nil {
			return nil, fmt.Errorf("conductor: job %s is cancelled, but its end was not announced (a host announces it when it takes the job): %w", id, err)
		}
		var j Job
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("conductor: decode job %s: %w", id, err)
		}
		return &j, nil
	}
	return nil, fmt.Errorf("conductor: cancel job %s: its state changed under every write; the stored cancel still ends it", id)
}

// writeFinal stores data, a final state, as job id's state if its revision
// is still rev, to be kept as long as workerd keeps a final state.
func (c *Client) writeFinal(ctx context.Context, id string, data []byte, rev uint64) error {
	ttl, err := c.finalTTL(ctx)
	if err != nil {
		return err
	}
	return retry(ctx, func(ctx context.Context) error {
		if ttl == 0 {
			_, err := c.kv.Update(ctx, id, data, rev)
			return err
		}
		_, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: subject.KV(c.kv.Bucket(), id), Data: data},
			jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
		return err
	})
}

// finalTTL reads how long a final state stays in the state bucket
// (wire.FinalTTL).
func (c *Client) finalTTL(ctx context.Context) (time.Duration, error) {
	st, err := c.js.Stream(ctx, "KV_"+c.kv.Bucket())
	if err != nil {
		return 0, fmt.Errorf("read the state bucket: %w", err)
	}
	cfg := st.CachedInfo().Config
	return wire.FinalTTL(cfg.Metadata, cfg.AllowMsgTTL)
}

// announceEnd tells conductord that the job of st, stored as data, has
// ended (its counts and archive take it), and wakes the job's waiters.
func (c *Client) announceEnd(ctx context.Context, st *wire.Job, data []byte) error {
	ends := wire.Ends{Type: st.Type, Jobs: []wire.End{{ID: st.ID, Status: st.Status, Batch: st.Batch, State: data}}}
	m := nats.NewMsg(c.space.JobEnds(st.Type))
	m.Data = ends.AppendJSON(nil)
	err := retry(ctx, func(ctx context.Context) error {
		_, err := c.js.PublishMsg(ctx, m, jetstream.WithMsgID("cancel-"+st.ID))
		return err
	})
	if err != nil {
		return err
	}
	ev := nats.NewMsg(c.space.JobEvent(st.Type, string(st.Status)))
	ev.Header.Set(names.HeaderJobID, st.ID)
	if st.Batch != "" {
		ev.Header.Set(names.HeaderBatch, st.Batch)
	}
	ev.Data = data
	return c.nc.PublishMsg(ev)
}

// isConflict reports whether a conditional write failed because the state
// changed since the revision it expected.
func isConflict(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
