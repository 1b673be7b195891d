package agent

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// acker announces the end of each job once its state is stored, in one
// wire.Ends for the jobs stored together, and passes them to the
// confirmer, which acks them once the ends are stored. Its goroutine (run)
// owns the bursts from acking on, and runs until acking is closed, then
// closes confirming; its context ends only the retries of failed stores.
// A burst's ends follow its stores' answers together; if a store is slow
// to answer, the jobs stored before it go first.
type acker struct {
	acking     <-chan []finishJob
	confirming chan<- announced
	answers    *storeAnswers
	states     *states
	leases     *leases
	js         jetstream.JetStream
	space      subject.Space
	typ        string
	log        *slog.Logger

	ready []finishJob // stored, not yet acked
	ends  wire.Ends
	buf   []byte
	// maxEnds bounds the bytes of one ends message: a burst's ends are
	// announced in as many as they need.
	maxEnds int
	// superseded counts the outcomes not kept since the last ends
	// (fence.go), announced with the next.
	superseded int
	// idPrefix and announced name each announcement (its Nats-Msg-Id):
	// a random prefix per acker, and a count.
	idPrefix  string
	announced uint64
}

func (a *acker) run(ctx context.Context) {
	defer close(a.confirming)
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

// ackReady announces the ends of the jobs stored so far, and hands them to
// the confirmer, which acks them once the ends are in the ends stream: a
// job is acked only once its end is announced, and conductord counts them
// and archives the final states they carry. The announcement is
// asynchronous, so that the next burst's stores are waited on meanwhile.
func (a *acker) ackReady(ctx context.Context) {
	if len(a.ready) == 0 && a.superseded == 0 {
		return
	}
	a.ends.Superseded, a.superseded = a.superseded, 0
	a.ends.Jobs = a.ends.Jobs[:0]
	size, from := 0, 0
	for i, f := range a.ready {
		st := &f.held.state
		end := wire.End{ID: st.ID, Status: st.Status, Batch: st.Batch, Payload: payloadToRemove(st, st.PayloadRef)}
		if st.Status.Final() {
			end.State = f.data
		}
		if len(a.ends.Jobs) > 0 && size+len(end.State) > a.maxEnds {
			a.announce(ctx, a.ready[from:i])
			from, size = i, 0
		}
		a.ends.Jobs = append(a.ends.Jobs, end)
		size += len(end.ID) + len(end.State) + 64
	}
	a.announce(ctx, a.ready[from:])
	clear(a.ready)
	a.ready = a.ready[:0]
}

// announce publishes the ends gathered in a.ends, those of jobs, hands the
// jobs to the confirmer with the publish's answer to come, and starts the
// next ends.
func (a *acker) announce(ctx context.Context, jobs []finishJob) {
	data := a.ends.AppendJSON(nil) // kept until the answer: a retry sends it again
	a.ends.Jobs, a.ends.Superseded = a.ends.Jobs[:0], 0
	if a.idPrefix == "" {
		a.idPrefix = "ends-" + newTag() + "-"
	}
	a.announced++
	c := announced{data: data, jobs: slices.Clone(jobs), msgID: a.idPrefix + strconv.FormatUint(a.announced, 10)}
	m := &nats.Msg{Subject: a.space.JobEnds(a.typ), Header: nats.Header{names.HeaderMsgID: []string{c.msgID}}, Data: data}
	var err error
	if c.ack, err = a.js.PublishMsgAsync(m); err != nil {
		c.ack = nil // the confirmer publishes again, synchronously
	}
	a.confirming <- c
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
