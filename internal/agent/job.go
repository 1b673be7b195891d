package agent

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
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
	// earlier is the history before this attempt, once read (by the
	// runner, or by the publisher), so that it is read once.
	earlier     []wire.Attempt
	readEarlier bool
}

// hasEarlier reports whether the job may have attempts before this one.
func (h *heldJob) hasEarlier() bool { return h.state.Attempts > 1 || h.requeued }

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
	var seq uint64
	md, err := m.Metadata()
	if err == nil {
		seq, h.state.CreatedAt = md.Sequence.Stream, md.Timestamp.UTC()
	} else {
		md = nil
	}
	h.state.ID = jobID(m, seq)
	return h, md
}

// jobID is the id of a job message: its Conductor-Job-Id header, else its
// Nats-Msg-Id header, else "seq-N" from its stream sequence. A header that
// is not a valid id (it could not be a state key) is passed over.
func jobID(m *nats.Msg, seq uint64) string {
	if id := m.Header.Get(names.HeaderJobID); id != "" && subject.Token("job id", id) == nil {
		return id
	}
	if id := m.Header.Get(names.HeaderMsgID); id != "" && subject.Token("job id", id) == nil {
		return id
	}
	return "seq-" + strconv.FormatUint(seq, 10)
}

// fallbacks says, per options header, what applies when it cannot be read.
var fallbacks = map[string]string{
	names.HeaderMaxAttempts: "the pool's max_attempts applies",
	names.HeaderTimeout:     "the pool's job_timeout applies",
	names.HeaderNotBefore:   "the job runs now",
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

// job turns a delivered message into a broker job and records that it runs.
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
	h.requeued = opts.Requeued
	st.Attempts = 1
	if md != nil {
		st.Attempts = int(md.NumDelivered)
	}
	if h.hasEarlier() {
		// A redelivery: its earlier deliveries that reached no worker are
		// not attempts, and its history is read here once. Only
		// redeliveries pay this read.
		if prev := s.states.previous(st.ID); prev != nil {
			st.Skipped = prev.Skipped
			st.Attempts = max(st.Attempts-prev.Skipped, 1)
			h.earlier, h.readEarlier = prev.History, true
		}
	}
	h.maxAttempts = s.limits.attempts()
	if opts.MaxAttempts > 0 {
		h.maxAttempts = opts.MaxAttempts
	}
	// The earlier attempts' history is read by the publisher, off the
	// worker's path (see withHistory).
	st.History = []wire.Attempt{{Attempt: st.Attempts, Host: s.host, StartedAt: now}}
	h.started = mono
	s.runner.add(h)
	return &broker.Job{ID: st.ID, Type: s.typ, Payload: m.Data, Attempt: st.Attempts, Handle: h, Timeout: opts.Timeout}
}
