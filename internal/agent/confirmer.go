package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// announced is a burst's ends, published, and the jobs they tell of.
type announced struct {
	data  []byte
	msgID string                 // the publish's Nats-Msg-Id, the same for every copy
	ack   jetstream.PubAckFuture // nil: the publish failed at once
	jobs  []finishJob
}

// confirmer acks (or naks) the jobs of each announcement once the server
// has its ends, in the order they were announced, then publishes an event
// per job. Ends the server did not take are published again,
// synchronously, a few times; if they still are not taken, their jobs are
// left unacked: redelivered, they are found ended and announced then (see
// source.ended). Its goroutine (run) owns the announcements from
// confirming on, and runs until confirming is closed; its context ends
// only the retries.
type confirmer struct {
	confirming <-chan announced
	states     *states
	leases     *leases
	nc         *nats.Conn
	space      subject.Space
	typ        string
	log        *slog.Logger
}

func (c *confirmer) run(ctx context.Context) {
	for a := range c.confirming {
		if !c.confirmed(ctx, a) {
			for _, f := range a.jobs {
				c.leases.release(f.held.msg)
			}
			continue
		}
		for _, f := range a.jobs {
			c.ack(ctx, f)
		}
	}
}

// confirmed waits for the server's answer to a's ends, publishing them
// again if need be, and reports whether they are stored.
func (c *confirmer) confirmed(ctx context.Context, a announced) bool {
	if a.ack != nil {
		select {
		case <-a.ack.Ok():
			return true // the common case: no timer
		default:
		}
		t := time.NewTimer(storeTimeout) // an answer lost to a reconnect never comes
		defer t.Stop()
		select {
		case <-a.ack.Ok():
			return true
		case err := <-a.ack.Err():
			c.log.Warn("announce job ends; retrying", "pool", c.typ, "jobs", len(a.jobs), "err", err)
		case <-t.C:
			c.log.Warn("announce job ends: no answer; retrying", "pool", c.typ, "jobs", len(a.jobs), "wait", storeTimeout)
		}
	}
	return c.states.announce(ctx, a.data, len(a.jobs), a.msgID)
}

// ack acks or naks the job of f, whose state is stored, and announces it.
func (c *confirmer) ack(ctx context.Context, f finishJob) {
	st := &f.held.state
	if st.Status == wire.StatusDead {
		c.states.indexDead(ctx, st, f.data)
	}
	// Released first: a lease extension sent after a delayed nak would
	// cut the retry's delay short (see leases).
	m := f.held.msg
	c.leases.release(m)
	var err error
	if f.retry < 0 {
		err = m.Ack()
	} else {
		err = m.NakWithDelay(f.retry)
	}
	if err != nil {
		c.log.Warn("ack job", "pool", c.typ, "job", st.ID, "err", err)
	}
	ev := nats.NewMsg(c.space.JobEvent(c.typ, string(st.Status)))
	ev.Header.Set(names.HeaderJobID, st.ID)
	if b := st.Batch; b != "" {
		ev.Header.Set(names.HeaderBatch, b)
	}
	ev.Data = f.data
	_ = c.nc.PublishMsg(ev)
}
