package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// storeTimeout bounds the wait for the answer to a state store: an answer
// can be lost (a reconnect, a leader change), and the acker must go on.
const storeTimeout = 10 * time.Second

// slowStore is how long the acker waits for a store's answer before it
// acks the jobs of its burst already stored.
const slowStore = 20 * time.Millisecond

// acker acks (or naks) each job once its state is stored, then announces
// it: an event per job, then one wire.Ends for the jobs acked together. Its
// goroutine (run) owns the bursts from acking on, and runs until acking is
// closed; its context ends only the retries of failed stores. A burst's
// acks and events follow its stores' answers together; if a store is slow
// to answer, the jobs stored before it go first.
type acker struct {
	acking  <-chan []finishJob
	answers *storeAnswers
	states  *states
	leases  *leases
	nc      *nats.Conn
	space   subject.Space
	typ     string
	log     *slog.Logger

	ready []finishJob // stored, not yet acked
	ends  wire.Ends
	buf   []byte
	// maxEnds bounds the bytes of one ends message: a burst's ends are
	// announced in as many as they need.
	maxEnds int
	// superseded counts the outcomes not kept since the last ends
	// (fence.go), announced with the next.
	superseded int
}

func (a *acker) run(ctx context.Context) {
	a.ends.Type = a.typ
	slow := func() { a.ackReady(ctx) }
	for burst := range a.acking {
		for _, f := range burst {
			switch v, ok := a.stored(ctx, &f, slow); {
			case !ok:
				// Leave the job unacked: it is redelivered when its lease
				// ends, and its state is written again then.
				a.leases.release(f.held.msg)
			case v == fenceWrite:
				a.ready = append(a.ready, f)
			default:
				a.supersede(f, v)
			}
		}
		a.ackReady(ctx)
	}
}

// supersede drops the outcome of f, which fence did not keep: the job had
// ended (its message is acked, as the attempt that ended it did or will),
// or a newer attempt holds it (its message is left to that attempt). Each
// is one log line and counts in the next ends.
func (a *acker) supersede(f finishJob, v fenceVerdict) {
	st := &f.held.state
	m := f.held.msg
	a.leases.release(m)
	a.superseded++
	why := "a newer attempt holds the job"
	if v == fenceEnded {
		why = "the job had ended"
		if err := m.Ack(); err != nil {
			a.log.Warn("ack a job that had ended", "pool", a.typ, "job", st.ID, "err", err)
		}
	}
	a.log.Warn("late outcome not kept: "+why, "pool", a.typ, "job", st.ID, "attempt", st.Attempts, "status", st.Status)
}

// ackReady announces the ends of the jobs stored so far, then acks them.
// The ends go first, durably (the ends stream): conductord counts them and
// archives the final states they carry, so a job is acked only once its
// end is announced. Ends that could not be announced leave their jobs
// unacked: redelivered, they are found ended and announced then (see
// source.ended).
func (a *acker) ackReady(ctx context.Context) {
	if len(a.ready) == 0 && a.superseded == 0 {
		return
	}
	a.ends.Superseded, a.superseded = a.superseded, 0
	a.ends.Jobs = a.ends.Jobs[:0]
	size, from, announced := 0, 0, true
	for i, f := range a.ready {
		st := &f.held.state
		end := wire.End{ID: st.ID, Status: st.Status, Batch: st.Batch}
		if st.Status.Final() {
			end.State = f.data
		}
		if len(a.ends.Jobs) > 0 && size+len(end.State) > a.maxEnds {
			announced = announced && a.announce(ctx, a.ready[from:i])
			from, size = i, 0
		}
		a.ends.Jobs = append(a.ends.Jobs, end)
		size += len(end.ID) + len(end.State) + 64
	}
	announced = announced && a.announce(ctx, a.ready[from:])
	for _, f := range a.ready {
		if announced {
			a.ack(ctx, f)
		} else {
			a.leases.release(f.held.msg)
		}
	}
	clear(a.ready)
	a.ready = a.ready[:0]
}

// announce publishes the ends gathered in a.ends, those of ready, and
// starts the next.
func (a *acker) announce(ctx context.Context, ready []finishJob) bool {
	a.buf = a.ends.AppendJSON(a.buf[:0])
	ok := a.states.announce(ctx, a.buf, len(ready))
	a.ends.Jobs, a.ends.Superseded = a.ends.Jobs[:0], 0
	return ok
}

// ack acks or naks the job of f, whose state is stored, and announces it.
func (a *acker) ack(ctx context.Context, f finishJob) {
	st := &f.held.state
	if st.Status == wire.StatusDead {
		a.states.indexDead(ctx, st, f.data)
	}
	// Released first: a lease extension sent after a delayed nak would
	// cut the retry's delay short (see leases).
	m := f.held.msg
	a.leases.release(m)
	var err error
	if f.retry < 0 {
		err = m.Ack()
	} else {
		err = m.NakWithDelay(f.retry)
	}
	if err != nil {
		a.log.Warn("ack job", "pool", a.typ, "job", st.ID, "err", err)
	}
	ev := nats.NewMsg(a.space.JobEvent(a.typ, string(st.Status)))
	ev.Header.Set(names.HeaderJobID, st.ID)
	if b := st.Batch; b != "" {
		ev.Header.Set(names.HeaderBatch, b)
	}
	ev.Data = f.data
	_ = a.nc.PublishMsg(ev)
}

// stored waits for the outcome's state to be stored, writing it again
// synchronously a few times if the pipelined write failed, and reading
// the state first if it failed because the state changed (fence.go): the
// verdict is fenceWrite once stored, another if the outcome is not to be
// kept; ok is false if it could not be stored. slow is called once the
// wait is longer than slowStore: it acks the jobs stored before.
func (a *acker) stored(ctx context.Context, f *finishJob, slow func()) (v fenceVerdict, ok bool) {
	conflict := false
	if f.store != nil {
		err := a.answers.wait(f.store, slow)
		if err == nil {
			return fenceWrite, true
		}
		if conflict = isConflict(err); !conflict {
			a.log.Warn("store job state; retrying", "pool", a.typ, "job", f.held.state.ID, "err", err)
		}
	}
	slow()
	return a.states.store(ctx, f, conflict)
}
