package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/payloads"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// source is the broker.Source of one pool: it pulls jobs of one type from the
// job stream, keeps the lease of every job it holds alive, and turns each
// outcome into a stored job state, an ack (or a nak for a retry) and a job
// event, in that order.
//
// It is made of components, each in a file of its own that says which
// goroutine owns which state:
//
//	fetcher   (fetch.go)     pull requests; owns its goroutine and the levels
//	handout   (handout.go)   jobs at hand and the workers waiting for them
//	pace      (pace.go)      the pool's size and its moving averages
//	leases    (leases.go)    every job held; its goroutine extends their leases
//	runner    (running.go)   stores "running" for jobs past runningDelay
//	publisher (publisher.go) stores outcomes' states, in bursts
//	acker     (acker.go)     announces the ends once stored
//	confirmer (confirmer.go) acks once the ends are announced
//	fence     (fence.go)     the rules of a write that finds the state changed
//	putter    (putback.go)   gives back jobs that reached no worker
//	states    (states.go)    reads and writes of the state bucket
//
// and the decision on an outcome (outcome.go) is a pure function. A job
// goes fetcher -> handout -> Next -> (runner) -> Done -> publisher -> acker
// -> confirmer.
type source struct {
	sourceConfig
	limits poolLimits
	// run and wait count the attempts by how long they ran, and the
	// first attempts by how long their jobs waited (the heartbeat's
	// histograms).
	run, wait wire.Observations
	pace      *pace
	out       *handout
	leases    *leases
	runner    *runner
	fetch     *fetcher
	putter    *putter
	states    *states
	answers   *storeAnswers    // the store's answers to the publisher's states
	finishing chan finishJob   // Done -> publisher
	acking    chan []finishJob // publisher -> acker, in bursts
	confirm   chan announced   // acker -> confirmer
	services  []startstop.Service
	cancel    context.CancelFunc // stops the components that run until stopped
}

var _ broker.ReadySource = (*source)(nil)

type sourceConfig struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	api         string // js's API prefix
	kv          jetstream.KeyValue
	space       subject.Space
	typ         string
	host        string
	workers     int // the pool's size
	prefetch    int // at most this many jobs buffered per worker while jobs are short; 0: none
	holdBytes   int // bound on the payloads buffered ahead; 0: flow.HoldBytes
	maxAttempts int
	maxCrashes  int // crashed attempts that make a job a poison job; 0: no limit
	maxResult   int
	expires     time.Duration
	ackWait     time.Duration
	// finalTTL is how long a final state stays in the state bucket once
	// written; 0: for the bucket's TTL (see names.MetaFinalTTL).
	finalTTL time.Duration
	log      *slog.Logger
	// cancelled reports whether a job was cancelled; nil: none is.
	cancelled func(id string) bool
	// replays says which first deliveries may be replays after a server
	// restart; nil: none.
	replays *replays
	// svc, if Proxied, writes the states through conductord.
	svc *hostsvc.Caller
	// payloads reads the payloads passed by reference.
	payloads *payloads.Reader
}

// poolLimits are the pool's max_attempts and max_crashes, which a reload
// may change while jobs run.
type poolLimits struct {
	maxAttempts atomic.Int64
	maxCrashes  atomic.Int64
}

func (l *poolLimits) set(maxAttempts, maxCrashes int) {
	l.maxAttempts.Store(int64(maxAttempts))
	l.maxCrashes.Store(int64(maxCrashes))
}

func (l *poolLimits) attempts() int { return int(l.maxAttempts.Load()) }
func (l *poolLimits) crashes() int  { return int(l.maxCrashes.Load()) }

func newSource(cfg sourceConfig) (*source, error) {
	s := &source{
		sourceConfig: cfg,
		pace:         newPace(cfg.workers, cfg.prefetch, cfg.holdBytes),
		leases:       newLeases(cfg.typ, cfg.ackWait, cfg.log),
		finishing:    make(chan finishJob, 256),
		acking:       make(chan []finishJob, 64),
		confirm:      make(chan announced, 64),
	}
	s.limits.set(cfg.maxAttempts, cfg.maxCrashes)
	s.out = newHandout(s.rank)
	s.states = &states{svc: cfg.svc, nc: cfg.nc, js: cfg.js, kv: cfg.kv, space: cfg.space, typ: cfg.typ, finalTTL: cfg.finalTTL, log: cfg.log}
	s.putter = newPutter(s.states, s.leases, cfg.log)
	s.runner = newRunner(s.states)
	var err error
	if s.answers, err = newStoreAnswers(cfg.nc); err != nil {
		return nil, err
	}
	if cfg.svc.Proxied() {
		s.answers.proxyTo(cfg.svc, cfg.typ)
	}
	// Credit never exceeds waiting workers + prefetch, so the deliveries'
	// buffer fills only after a resize up, or for a large pool past
	// maxMsgsBuffer, and then only delays deliveries.
	buffer := min(max(2*max(cfg.workers, 1)*(1+cfg.prefetch)+64, 1024), maxMsgsBuffer)
	s.fetch, err = newFetcher(fetcherConfig{
		nc: cfg.nc, api: cfg.api, space: cfg.space, typ: cfg.typ, expires: cfg.expires, log: cfg.log, buffer: buffer,
		demand: s.demand, deliver: s.deliver,
		remake: func(ctx context.Context) error { return cfg.svc.Consumers(ctx, cfg.typ, cfg.ackWait) },
	})
	if err != nil {
		s.answers.close()
		return nil, err
	}
	pub := &publisher{
		finishing: s.finishing, acking: s.acking, answers: s.answers, states: s.states,
		pace: s.pace, leases: s.leases, limits: &s.limits, space: cfg.space, log: cfg.log, typ: cfg.typ,
		maxState: int(cfg.nc.MaxPayload()),
	}
	ack := &acker{
		acking: s.acking, confirming: s.confirm, answers: s.answers, states: s.states, leases: s.leases,
		js: cfg.js, space: cfg.space, typ: cfg.typ, log: cfg.log, maxEnds: int(cfg.nc.MaxPayload()) / 2,
	}
	conf := &confirmer{
		confirming: s.confirm, states: s.states, leases: s.leases,
		nc: cfg.nc, space: cfg.space, typ: cfg.typ, log: cfg.log,
	}
	// Started in this order, stopped in the reverse: the stages that drain
	// outcomes (publisher, acker, confirmer) end when their input is closed, which
	// close does first; the others end when their context is cancelled.
	s.services = []startstop.Service{
		startstop.NewFunc(s.fetch.run),
		startstop.NewFunc(s.leases.run),
		startstop.NewFunc(s.runner.run),
		startstop.NewFunc(pub.run),
		startstop.NewFunc(ack.run),
		startstop.NewFunc(conf.run),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := startstop.StartAll(ctx, s.services...); err != nil {
		cancel()
		s.fetch.close()
		s.answers.close()
		return nil, err
	}
	return s, nil
}

// close finishes every outcome already reported, releases the jobs no worker
// took so they are redelivered, and stops the source's goroutines. The pool
// must have stopped: no Next or Done may run during or after close.
//
// The order: the fetcher's subscriptions are drained first, so that jobs
// on their way reach it (and are released below) instead of waiting out
// their lease; then the outcomes are finished (publisher, acker) while
// every component is told to stop; then the jobs no worker took are put
// back.
func (s *source) close() {
	s.fetch.drain()
	close(s.finishing)
	s.cancel()
	startstop.StopAll(s.services...)
	s.answers.close() // the acker is done with them
	left := append(s.out.drain(), s.fetch.close()...)
	for _, m := range left {
		h, _ := identify(m)
		s.putter.putBack(h, "put back a job no worker took")
	}
	s.putter.wait()
	s.runner.wait()
}

// maxMsgsBuffer bounds the deliveries buffered for the fetcher: 512 KiB.
const maxMsgsBuffer = 16 << 10

// TryNext implements broker.ReadySource. A job delivered before is not
// queued behind a running one (maxPayload >= 0): a worker that holds its
// answers back while it runs queued jobs (the Go SDK does) and crashes
// loses them, so that workerd takes the crash for the job it saw running
// and the one that crashed it for one that never started, which would
// then come again uncounted, for ever if it always crashes its worker.
// Once delivered again, it runs on a worker of its own, where its crash
// is its own.
func (s *source) TryNext(maxPayload int) (*broker.Job, bool) {
	for {
		m := s.out.tryTake(maxPayload)
		if m == nil {
			return nil, false
		}
		s.fetch.poke()
		if job, ok := s.take(m); ok {
			return job, true
		}
	}
}

// Next implements broker.Source.
func (s *source) Next(ctx context.Context) (*broker.Job, error) {
	for {
		load, _ := broker.WorkerLoad(ctx)
		m, err := s.out.await(ctx, load, s.fetch.poke)
		if err != nil {
			return nil, err
		}
		if job, ok := s.take(m); ok {
			return job, nil
		}
	}
}

// take turns a delivered message into a job for a worker. Its payload is
// not looked at: a worker that takes payloads framed gets it as it is, and
// one that reads them in the line refuses what is not JSON through the
// broker, which ends the job dead ("payload is not valid JSON").
func (s *source) take(m *nats.Msg) (*broker.Job, bool) {
	opts, bad := wire.DecodeOptions(m.Header)
	if s.deferred(m, opts) {
		return nil, false
	}
	s.badOptions(m, bad)
	job := s.job(m, opts)
	switch {
	case job == nil:
		return nil, false
	case s.isCancelled(job.ID):
		s.Done(job, broker.Outcome{Err: "cancelled before it started"})
		return nil, false
	case opts.PayloadBad:
		s.Done(job, broker.Outcome{Err: "its payload cannot be read: its message's payload headers name no object (" + names.HeaderPayloadObject + ")", Permanent: true})
		return nil, false
	case opts.Payload != nil:
		// Read once the job is claimed: a copy of a job that has ended
		// needs no payload, and its object may be gone.
		return s.withPayload(job, *opts.Payload)
	}
	return job, true
}

// payloadReadTimeout bounds the read of one payload passed by reference.
const payloadReadTimeout = 2 * time.Minute

// withPayload reads the payload of job, passed by reference, for the
// worker that takes it. A payload that cannot be read fails the attempt:
// for good if it never will be (its object gone, or not the one its
// message names), else to be tried again as any failed attempt is.
func (s *source) withPayload(job *broker.Job, ref wire.PayloadRef) (*broker.Job, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), payloadReadTimeout)
	defer cancel()
	data, err := s.payloads.Read(ctx, ref)
	if err != nil {
		s.log.Warn("read the payload of a job", "pool", s.typ, "job", job.ID, "object", ref.Object, "err", err)
		s.Done(job, broker.Outcome{Err: "its payload cannot be read: " + err.Error(), Permanent: payloads.Permanent(err)})
		return nil, false
	}
	job.Payload = data
	return job, true
}

// deferred puts back a delayed job that came before its time: JetStream
// redelivers it then, and the early delivery is counted as skipped, not as
// an attempt.
func (s *source) deferred(m *nats.Msg, opts wire.Options) bool {
	if opts.NotBefore.IsZero() {
		return false
	}
	wait := time.Until(opts.NotBefore)
	if wait <= 0 {
		return false
	}
	h, _ := identify(m)
	s.putter.skip(h, wait, "put back a delayed job")
	return true
}

func (s *source) isCancelled(id string) bool { return s.cancelled != nil && s.cancelled(id) }

// deliver takes a job from the fetcher: it is held (its lease kept) until
// it is finished or put back, and goes to a waiting worker or waits for one.
// While the pool is paused (drained), or failed with no worker waiting, it
// is put back at once: a request made before may still bring jobs.
func (s *source) deliver(m *nats.Msg) {
	s.leases.hold(m)
	s.pace.sized(len(m.Data))
	if !s.out.deliver(m) {
		h, _ := identify(m)
		s.putter.putBack(h, "put back a job: its pool is drained or failed")
	}
}

// held reports the jobs the source holds that no worker has taken, and
// the ids of the first max of them.
func (s *source) held(max int) (n int, ids []string) {
	n, msgs := s.out.peek(max)
	ids = make([]string, 0, len(msgs))
	for _, m := range msgs {
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		ids = append(ids, jobID(m, seq))
	}
	return n, ids
}

// demand reports the workers waiting, and how many jobs the source wants at
// hand or on their way (target): one per waiting worker plus the prefetch;
// none while the pool is paused, and no prefetch while it is failed.
func (s *source) demand() (waiting, target, ready int) {
	waiting, ready = s.out.counts()
	switch paused, failed := s.out.holding(); {
	case paused:
		return waiting, 0, ready
	case failed:
		return waiting, waiting, ready
	}
	return waiting, waiting + s.pace.ahead(), ready
}

// pause stops taking jobs for the pool (a drain: its workers are
// stopping), and gives back at once every job it holds that no worker
// has taken, so that other hosts take them. The jobs its workers run are
// theirs to finish.
func (s *source) pause() {
	s.giveBack(s.out.setPaused(true), "put back a job: its pool is drained")
	s.fetch.poke() // withdraws the requests under way
}

// resume takes jobs for the pool again.
func (s *source) resume() {
	s.out.setPaused(false)
	s.fetch.poke()
}

// poolEvent follows the pool's state: while its crash-loop breaker holds
// its workers down (failed), the source holds no job ahead, and gives back
// those it held, for other hosts to run; a worker still up gets one job
// at a time, when it asks. It holds jobs ahead again once the pool has
// recovered, been resumed, or a worker of it has come up (a restart).
func (s *source) poolEvent(kind broker.EventKind) {
	switch kind {
	case broker.EventPoolFailed:
		s.giveBack(s.out.setFailed(true), "put back a job: its pool failed (crash loop)")
	case broker.EventPoolRecovered, broker.EventPoolResumed, broker.EventWorkerReady:
		if _, failed := s.out.holding(); !failed {
			return // the common case: a worker ready in a healthy pool
		}
		s.out.setFailed(false)
	default:
		return
	}
	s.fetch.poke()
}

// giveBack puts back jobs the source held that no worker took.
func (s *source) giveBack(msgs []*nats.Msg, what string) {
	for _, m := range msgs {
		h, _ := identify(m)
		s.putter.putBack(h, what)
	}
}

// priority returns the priority of a delivered job, from its subject.
func (s *source) priority(m *nats.Msg) wire.Priority {
	_, p := s.space.ParseJob(m.Subject)
	return wire.Priority(p)
}

// rank orders priorities: 0 is the highest.
func (s *source) rank(m *nats.Msg) int {
	switch s.priority(m) {
	case wire.PriorityHigh:
		return 0
	case wire.PriorityLow:
		return 2
	}
	return 1
}

// resize sets the pool's size, which bounds the prefetch; the jobs held
// past the smaller prefetch are given back at once, for other hosts.
func (s *source) resize(workers int) {
	s.pace.resize(workers)
	if _, target, ready := s.demand(); ready > target {
		s.giveBack(s.out.takeBack(ready-target), "put back a job: its pool is smaller")
	}
	s.fetch.poke()
}

// setLimits sets the pool's max_attempts and max_crashes (a reload): the
// jobs taken from now on get them.
func (s *source) setLimits(maxAttempts, maxCrashes int) { s.limits.set(maxAttempts, maxCrashes) }

// reconnected tells the fetcher that the connection to NATS was re-made:
// the server may have forgotten its pull requests, so it asks again now
// rather than when they would have expired.
func (s *source) reconnected() { s.fetch.reconnected() }

// Done implements broker.Source.
func (s *source) Done(job *broker.Job, out broker.Outcome) {
	h := job.Handle.(*heldJob)
	h.mu.Lock()
	h.finished = true
	h.mu.Unlock()
	if out.NotStarted {
		// Back to the queue at once, for any worker. No attempt ended, but
		// JetStream counts the delivery: the state counts it as skipped
		// first, so that the next delivery's attempt number leaves it out.
		s.putter.putBack(h, "put back a job that reached no worker")
		return
	}
	st := &h.state
	st.UpdatedAt = out.Ended.UTC()
	if st.UpdatedAt.IsZero() {
		st.UpdatedAt = time.Now().UTC()
	}
	last := &st.History[len(st.History)-1]
	last.PID = out.PID
	last.EndedAt = st.UpdatedAt
	last.Crashed = out.Crashed
	last.OOMKilled = out.OOMKilled
	if !out.Started.IsZero() {
		last.StartedAt = out.Started.UTC()
		if !out.Crashed {
			s.pace.observe(out.Ended.Sub(out.Started))
		}
		s.run.Observe(out.Ended.Sub(out.Started))
		if last.Attempt == 1 && !st.CreatedAt.IsZero() {
			s.wait.Observe(out.Started.Sub(st.CreatedAt))
		}
	}
	result, refused := checkResult(out.Result, s.maxResult)
	v := decide(attemptEnd{
		Err: out.Err, Permanent: out.Permanent, Crashed: out.Crashed, Refused: refused,
		Cancelled: (out.Err != "" || refused != "") && s.isCancelled(st.ID), Attempt: st.Attempts,
		MaxAttempts: h.maxAttempts,
	}, Backoff)
	st.Status, st.Error = v.Status, wire.CutError(v.Error)
	switch v.Status {
	case wire.StatusSucceeded:
		st.Result = result
	case wire.StatusDead:
		st.Payload = keptPayload(st.PayloadRef, job.Payload)
	}
	last.Error = st.Error
	s.finishing <- finishJob{held: h, retry: v.Retry}
}
