package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// source is the broker.Source of one pool: it pulls jobs of one type from the
// job stream, one pull request per idle worker, keeps the lease of every job
// it holds alive, and turns each outcome into a stored job state, an ack (or
// a nak for a retry) and a job event, in that order.
type source struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	kv          jetstream.KeyValue
	space       subject.Space
	typ         string
	host        string
	maxAttempts int
	maxResult   int
	expires     time.Duration
	ackWait     time.Duration
	log         *slog.Logger
	pullSubj    string
	pullReq     []byte

	// mu guards the fields below: Next, the inbox subscriptions, the lease
	// keeper and close touch them.
	mu      sync.Mutex
	inboxes []*inbox           // every inbox made
	free    []*inbox           // inboxes no Next is using
	held    map[*nats.Msg]bool // every job delivered and not yet finished
	closed  bool

	finishing chan finishJob // Done -> the publisher stage
	acking    chan finishJob // publisher -> the acker stage
	stop      chan struct{}
	wg        sync.WaitGroup
}

var _ broker.Source = (*source)(nil)

// inbox is a reply subject for pull requests with its own subscription. A
// delivered job carries its stream subject, not the reply subject, so each
// waiting Next needs an inbox of its own. Next takes one from the free list
// and gives it back; a job that arrives after its Next gave up waits in the
// inbox's channel for the next Next that takes it (its lease kept alive).
type inbox struct {
	subj string
	sub  *nats.Subscription
	msgs chan *nats.Msg
}

// heldJob is what the source keeps in broker.Job.Handle.
type heldJob struct {
	msg   *nats.Msg
	state wire.Job
}

// finishJob is one outcome on its way to the store.
type finishJob struct {
	held   *heldJob
	data   []byte
	future jetstream.PubAckFuture
	retry  time.Duration // < 0: ack; >= 0: nak with this delay
}

type sourceConfig struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	kv          jetstream.KeyValue
	space       subject.Space
	typ         string
	host        string
	maxAttempts int
	maxResult   int
	expires     time.Duration
	ackWait     time.Duration
	log         *slog.Logger
}

func newSource(cfg sourceConfig) (*source, error) {
	s := &source{
		nc:          cfg.nc,
		js:          cfg.js,
		kv:          cfg.kv,
		space:       cfg.space,
		typ:         cfg.typ,
		host:        cfg.host,
		maxAttempts: cfg.maxAttempts,
		maxResult:   cfg.maxResult,
		expires:     cfg.expires,
		ackWait:     cfg.ackWait,
		log:         cfg.log,
		pullSubj:    "$JS.API.CONSUMER.MSG.NEXT." + cfg.space.JobStream() + "." + cfg.space.Consumer(cfg.typ),
		pullReq:     fmt.Appendf(nil, `{"batch":1,"expires":%d}`, cfg.expires.Nanoseconds()),
		held:        make(map[*nats.Msg]bool),
		finishing:   make(chan finishJob, 256),
		acking:      make(chan finishJob, 1024),
		stop:        make(chan struct{}),
	}
	s.wg.Add(3)
	go s.publisher()
	go s.acker()
	go s.keepLeases()
	return s, nil
}

// close finishes every outcome already reported, releases jobs that arrived
// for no one so they are redelivered, and stops the source's goroutines. The
// pool must have stopped: no Next or Done may run during or after close.
func (s *source) close() {
	s.mu.Lock()
	s.closed = true
	inboxes := s.inboxes
	s.mu.Unlock()
	for _, in := range inboxes {
		_ = in.sub.Unsubscribe()
		for len(in.msgs) > 0 {
			if m := <-in.msgs; !isStatus(m) {
				s.release(m)
				_ = m.Nak()
			}
		}
	}
	close(s.finishing)
	close(s.stop)
	s.wg.Wait()
}

// takeInbox returns a free inbox, making one if none is free.
func (s *source) takeInbox() (*inbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("job source closed")
	}
	if n := len(s.free); n > 0 {
		in := s.free[n-1]
		s.free = s.free[:n-1]
		return in, nil
	}
	in := &inbox{subj: s.nc.NewInbox(), msgs: make(chan *nats.Msg, 64)}
	sub, err := s.nc.Subscribe(in.subj, func(m *nats.Msg) {
		if !isStatus(m) {
			s.mu.Lock()
			s.held[m] = true
			s.mu.Unlock()
		}
		in.msgs <- m
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to job deliveries: %w", err)
	}
	in.sub = sub
	s.inboxes = append(s.inboxes, in)
	return in, nil
}

func (s *source) putInbox(in *inbox) {
	s.mu.Lock()
	s.free = append(s.free, in)
	s.mu.Unlock()
}

// Next implements broker.Source.
func (s *source) Next(ctx context.Context) (*broker.Job, error) {
	in, err := s.takeInbox()
	if err != nil {
		return nil, err
	}
	defer s.putInbox(in)
	for {
		// A job left in the inbox by an earlier request comes first.
		for len(in.msgs) > 0 {
			if m := <-in.msgs; !isStatus(m) {
				return s.job(m), nil
			}
		}
		m, err := s.pull(ctx, in)
		if err != nil {
			return nil, err
		}
		if m != nil {
			return s.job(m), nil
		}
	}
}

// pull sends one pull request for one job and waits for its answer. It
// returns nil, nil when the request ended without a job and should be sent
// again.
func (s *source) pull(ctx context.Context, in *inbox) (*nats.Msg, error) {
	if err := s.nc.PublishRequest(s.pullSubj, in.subj, s.pullReq); err != nil {
		return nil, s.pause(ctx, fmt.Errorf("request a job: %w", err))
	}
	// The server may drop a request without an answer (it restarted, or we
	// reconnected), so a timer slightly past the request's expiry renews it.
	timer := time.NewTimer(s.expires + 2*time.Second)
	defer timer.Stop()
	select {
	case m := <-in.msgs:
		if !isStatus(m) {
			return m, nil
		}
		return nil, s.status(ctx, m)
	case <-timer.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// status handles a status reply to a pull request. Timeouts are routine;
// anything else is logged and followed by a pause so that a missing consumer
// or a full server does not become a hot loop.
func (s *source) status(ctx context.Context, m *nats.Msg) error {
	code := m.Header.Get("Status")
	switch code {
	case "404", "408":
		return nil
	}
	return s.pause(ctx, fmt.Errorf("request a job: status %s %s", code, m.Header.Get("Description")))
}

// pause logs err and waits a second, or until ctx ends.
func (s *source) pause(ctx context.Context, err error) error {
	s.log.Warn("job pull failed; retrying", "pool", s.typ, "err", err)
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *source) release(m *nats.Msg) {
	s.mu.Lock()
	delete(s.held, m)
	s.mu.Unlock()
}

// job turns a delivered message into a broker job and records that it runs.
func (s *source) job(m *nats.Msg) *broker.Job {
	now := time.Now().UTC()
	h := &heldJob{msg: m}
	st := &h.state
	st.Type = s.typ
	st.Status = wire.StatusRunning
	st.UpdatedAt = now
	st.Batch = m.Header.Get(wire.HeaderBatch)
	if md, err := m.Metadata(); err == nil {
		st.Attempts = int(md.NumDelivered)
		st.CreatedAt = md.Timestamp.UTC()
		st.ID = jobID(m, md.Sequence.Stream)
	} else {
		st.Attempts = 1
		st.ID = jobID(m, 0)
	}
	if st.Attempts > 1 {
		st.History = s.history(st.ID)
	}
	st.History = append(st.History, wire.Attempt{Attempt: st.Attempts, Host: s.host, StartedAt: now})
	if n := len(st.History); n > wire.MaxHistory {
		st.History = st.History[n-wire.MaxHistory:]
	}
	if data, err := json.Marshal(st); err == nil {
		// Fire and forget: the final state follows on the same connection
		// and so lands after this one.
		_, _ = s.js.PublishMsgAsync(&nats.Msg{Subject: subject.KV(s.space.StateBucket(), st.ID), Data: data})
	}
	return &broker.Job{ID: st.ID, Type: s.typ, Payload: m.Data, Attempt: st.Attempts, Handle: h}
}

// history reads the attempts a job made before this one.
func (s *source) history(id string) []wire.Attempt {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		return nil
	}
	var prev wire.Job
	if json.Unmarshal(e.Value(), &prev) != nil {
		return nil
	}
	return prev.History
}

// jobID is the id of a job message: its Conductor-Job-Id header, else its
// Nats-Msg-Id header, else "seq-N" from its stream sequence.
func jobID(m *nats.Msg, seq uint64) string {
	if id := m.Header.Get(wire.HeaderJobID); id != "" {
		return id
	}
	if id := m.Header.Get(wire.HeaderMsgID); id != "" && subject.Token("job id", id) == nil {
		return id
	}
	return "seq-" + strconv.FormatUint(seq, 10)
}

// Done implements broker.Source.
func (s *source) Done(job *broker.Job, out broker.Outcome) {
	h := job.Handle.(*heldJob)
	st := &h.state
	st.UpdatedAt = out.Ended.UTC()
	if st.UpdatedAt.IsZero() {
		st.UpdatedAt = time.Now().UTC()
	}
	last := &st.History[len(st.History)-1]
	last.PID = out.PID
	last.EndedAt = st.UpdatedAt
	if !out.Started.IsZero() {
		last.StartedAt = out.Started.UTC()
	}

	if out.Err == "" && len(out.Result) > s.maxResult {
		out.Err = fmt.Sprintf("result of %d bytes is over the limit of %d bytes", len(out.Result), s.maxResult)
		out.Permanent = true
	}
	retry := time.Duration(-1)
	switch {
	case out.Err == "":
		st.Status = wire.StatusSucceeded
		st.Result = out.Result
		st.Error = ""
	case out.Permanent || st.Attempts >= s.maxAttempts:
		st.Status = wire.StatusDead
		st.Error = out.Err
		st.Payload = job.Payload
	default:
		st.Status = wire.StatusFailed
		st.Error = out.Err
		retry = 0 // a crash is retried at once: the job did nothing wrong yet
		if !out.Crashed {
			retry = Backoff(st.Attempts)
		}
	}
	last.Error = st.Error
	data, err := json.Marshal(st)
	if err != nil {
		// The result is valid JSON from the broker; this cannot happen.
		panic(fmt.Sprintf("agent: encode job state: %v", err))
	}
	s.finishing <- finishJob{held: h, data: data, retry: retry}
}

// Backoff is the delay before retrying a job whose attempt failed: 1s,
// doubling per attempt, capped at 5m, with 20% jitter.
func Backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 9)
	d = min(d, 5*time.Minute)
	return d - d/10 + rand.N(d/5+1)
}

// publisher stores each outcome's state without waiting for the store's
// answer, so that stores pipeline; the acker waits for the answers in order.
func (s *source) publisher() {
	defer s.wg.Done()
	defer close(s.acking)
	for f := range s.finishing {
		subj := subject.KV(s.space.StateBucket(), f.held.state.ID)
		fut, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subj, Data: f.data})
		if err != nil {
			s.log.Warn("store job state", "pool", s.typ, "job", f.held.state.ID, "err", err)
		}
		f.future = fut
		s.acking <- f
	}
}

// acker acks (or naks) each job once its state is stored, then announces it.
func (s *source) acker() {
	defer s.wg.Done()
	for f := range s.acking {
		if !s.stored(f) {
			// Leave the job unacked: it is redelivered when its lease ends,
			// and its state is written again then.
			s.release(f.held.msg)
			continue
		}
		m := f.held.msg
		var err error
		if f.retry < 0 {
			err = m.Ack()
		} else {
			err = m.NakWithDelay(f.retry)
		}
		if err != nil {
			s.log.Warn("ack job", "pool", s.typ, "job", f.held.state.ID, "err", err)
		}
		s.release(m)
		ev := nats.NewMsg(s.space.JobEvent(s.typ, string(f.held.state.Status)))
		ev.Header.Set(wire.HeaderJobID, f.held.state.ID)
		if b := f.held.state.Batch; b != "" {
			ev.Header.Set(wire.HeaderBatch, b)
		}
		ev.Data = f.data
		_ = s.nc.PublishMsg(ev)
	}
}

// stored waits for the outcome's state to be stored, writing it again
// synchronously a few times if the asynchronous write failed.
func (s *source) stored(f finishJob) bool {
	if f.future != nil {
		select {
		case <-f.future.Ok():
			return true
		case err := <-f.future.Err():
			s.log.Warn("store job state; retrying", "pool", s.typ, "job", f.held.state.ID, "err", err)
		}
	}
	subj := subject.KV(s.space.StateBucket(), f.held.state.ID)
	delay := 100 * time.Millisecond
	for range 6 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.js.Publish(ctx, subj, f.data)
		cancel()
		if err == nil {
			return true
		}
		s.log.Warn("store job state; retrying", "pool", s.typ, "job", f.held.state.ID, "err", err)
		if !s.wait(delay) {
			break
		}
		delay *= 2
	}
	s.log.Error("job state not stored; the job will be redelivered", "pool", s.typ, "job", f.held.state.ID)
	return false
}

// wait waits for d, reporting false if the source is stopping. Used on error
// paths only.
func (s *source) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

// keepLeases tells JetStream, a third of a lease apart, that every held job
// is still being worked on, so that only a lost host lets a lease run out.
func (s *source) keepLeases() {
	defer s.wg.Done()
	t := time.NewTicker(s.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		msgs := make([]*nats.Msg, 0, len(s.held))
		for m := range s.held {
			msgs = append(msgs, m)
		}
		s.mu.Unlock()
		for _, m := range msgs {
			if err := m.InProgress(); err != nil && !errors.Is(err, nats.ErrMsgAlreadyAckd) {
				s.log.Debug("extend job lease", "pool", s.typ, "err", err)
			}
		}
	}
}

func isStatus(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") != ""
}
