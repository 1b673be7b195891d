package agent

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/token"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// heldJob is what the source keeps in broker.Job.Handle, from the moment a
// worker takes the job until its outcome is acked. mu orders the
// running-state write (the runner's) before the final one (Done's): after
// finished is set, only Done and the stages after it touch state.
type heldJob struct {
	msg      *nats.Msg
	started  time.Time // when job made it, with the monotonic clock
	mu       sync.Mutex
	finished bool
	requeued bool // a dead job queued again: it has a history from before
	// maxAttempts is the job's own limit, or the pool's.
	maxAttempts int
	state       wire.Job
	// tag and holder are the attempt's claim on the state (wire.Holder):
	// its first delivery's, or the one claim stored (claimed set).
	tag     string
	seq     uint64 // the stream sequence of its message
	holder  wire.Holder
	claimed bool
	// rev is the revision of the state that the attempt's next write
	// expects (fence.go). Guarded by mu: the runner moves it.
	rev uint64
}

// finishJob is one outcome on its way to the store.
type finishJob struct {
	held  *heldJob
	data  []byte
	store *stateStore   // nil until published
	retry time.Duration // < 0: ack; >= 0: nak with this delay
}

// identify returns the held job of a delivered message, with its id,
// batch and creation time, and the delivery's metadata (nil if none).
func identify(m *nats.Msg) (*heldJob, *nats.MsgMetadata) {
	h := &heldJob{msg: m}
	h.state.Batch = m.Header.Get(names.HeaderBatch)
	// Most jobs name no submitter: Check would make an error of each.
	if v := m.Header.Get(names.HeaderSubmitter); v != "" && token.Check("credential id", v) == nil {
		h.state.Submitter = v
	}
	var seq uint64
	md, err := m.Metadata()
	if err == nil {
		seq, h.state.CreatedAt = md.Sequence.Stream, md.Timestamp.UTC()
		h.seq = seq
	} else {
		md = nil
	}
	h.state.ID = jobID(m, seq)
	return h, md
}

// jobID is the id of a job message (wire.MessageJobID).
func jobID(m *nats.Msg, seq uint64) string { return wire.MessageJobID(m.Header, seq) }

// fallbacks says, per options header, what applies when it cannot be read.
var fallbacks = map[string]string{
	names.HeaderMaxAttempts: "the pool's max_attempts applies",
	names.HeaderTimeout:     "the pool's job_timeout applies",
	names.HeaderNotBefore:   "the job runs now",
	names.HeaderStateRev:    "its first write expects no state, and reads the state if there is one",
}

// badOptions logs the option headers of a job that could not be read: the
// job runs without them. It is called once a worker takes the job, not for
// a delayed job's early deliveries.
func (s *source) badOptions(m *nats.Msg, bad []*wire.HeaderError) {
	if len(bad) == 0 {
		return
	}
	h, _ := identify(m)
	for _, e := range bad {
		s.log.Warn("ignoring a bad job option header; "+fallbacks[e.Header], "job", h.state.ID, "header", e.Header, "value", e.Value)
	}
}

// job turns a delivered message into a broker job and records that it
// runs. A redelivered (or requeued) job claims its state first (see
// states.claim); it returns nil if the job is not to run, having acked or
// left its message.
func (s *source) job(m *nats.Msg, opts wire.Options) *broker.Job {
	mono := time.Now() // with its monotonic reading, for the runner
	now := mono.UTC()
	h, md := identify(m)
	st := &h.state
	st.Type = s.typ
	st.Status = wire.StatusRunning
	st.UpdatedAt = now
	if p := s.priority(m); p != wire.PriorityNormal {
		st.Priority = p
	}
	st.PayloadRef = opts.Payload
	h.requeued = opts.Requeued
	h.tag = newTag()
	delivered := 1
	if md != nil {
		delivered = int(md.NumDelivered)
	}
	st.Attempts = 1
	st.History = []wire.Attempt{{Attempt: 1, Host: s.host, StartedAt: now}}
	h.holder, h.rev = wire.FirstClaim(opts.StateRev, h.seq, h.tag), opts.StateRev
	st.Holder = h.holder.String()
	redelivered := false
	// A cancelled job claims too: its canceller may have ended it, and its
	// state tells.
	if delivered > 1 || h.requeued || s.mustClaim(h, opts) || s.isCancelled(st.ID) {
		// Only redeliveries pay these round trips: a read, a write.
		switch s.states.claim(h, delivered) {
		case claimEnded:
			s.ended(h)
			return nil
		case claimAborted:
			s.leases.release(m)
			return nil
		case claimBusy:
			// Another message of the job (a copy) holds it while it runs:
			// this one waits for the job to end, to be acked then.
			s.leases.release(m)
			if err := m.NakWithDelay(s.ackWait); err != nil {
				s.log.Warn("put back a copy of a running job", "pool", s.typ, "job", st.ID, "err", err)
			}
			s.log.Warn("a copy of a running job's message was delivered; it waits for the job to end", "pool", s.typ, "job", st.ID)
			return nil
		}
		h.claimed = true
		redelivered = len(st.History) > 1
	}
	h.maxAttempts = s.limits.attempts()
	if opts.MaxAttempts > 0 {
		h.maxAttempts = opts.MaxAttempts
	}
	h.started = mono
	s.runner.add(h)
	return &broker.Job{ID: st.ID, Type: s.typ, Payload: m.Data, Attempt: st.Attempts, Redelivered: redelivered, Handle: h, Timeout: opts.Timeout}
}

// mustClaim reports whether the first delivery of h must claim its job's
// state before it runs, as a redelivery does: a message that a restarted
// server may be delivering again (replays), or one that names its job but
// carries no state revision (a publisher's own id, Nats-Msg-Id or
// Conductor-Job-Id, with no state stored first): its id may be that of a
// job that has ended, whose state may have gone to the archive, and it must
// not run that job again nor replace its final state.
func (s *source) mustClaim(h *heldJob, opts wire.Options) bool {
	return s.replays.suspect(h.seq, s.nc.ConnectedServerId()) || opts.StateRev == 0 && h.seq != 0 && h.state.ID != wire.SeqJobID(h.seq)
}

// ended acks a delivery of a job that has ended already (its state, in
// h, is final): an ack of an earlier attempt lost, a copy of its message.
// It does not run again. Its end is announced again first: the ack may
// have been lost with the announcement, which conductord archives.
func (s *source) ended(h *heldJob) {
	s.leases.release(h.msg)
	st := &h.state
	ref := st.PayloadRef
	if ref == nil {
		// Ended before it ran (cancelled while queued): its message names
		// the object.
		ref, _ = wire.DecodePayload(h.msg.Header)
	}
	end := wire.End{ID: st.ID, Status: st.Status, Batch: st.Batch, State: encodeState(st, nil), Payload: payloadToRemove(st, ref)}
	ends := wire.Ends{Type: s.typ, Again: true, Jobs: []wire.End{end}}
	if !s.states.announce(context.Background(), ends.AppendJSON(nil), 1, "") {
		return // redelivered when its lease ends
	}
	if err := h.msg.Ack(); err != nil {
		s.log.Warn("ack a delivery of a job that has ended", "pool", s.typ, "job", h.state.ID, "err", err)
	}
	s.log.Info("a job that has ended was delivered again; acked, not run", "pool", s.typ, "job", h.state.ID)
}

// payloadToRemove names the object of a payload passed by reference (ref)
// on the end of a job that ends it for good, succeeded or cancelled: its
// end asks conductord to remove it. A dead job keeps its object.
func payloadToRemove(st *wire.Job, ref *wire.PayloadRef) string {
	if ref == nil || (st.Status != wire.StatusSucceeded && st.Status != wire.StatusCancelled) {
		return ""
	}
	return ref.Object
}
