package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
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
// job stream, keeps the lease of every job it holds alive, and turns each
// outcome into a stored job state, an ack (or a nak for a retry) and a job
// event, in that order.
//
// Flow control: one fetcher goroutine keeps pull requests outstanding for as
// many jobs as there are workers waiting in Next, plus a prefetch while the
// pool's jobs are short (see prefetchLocked). A job that arrives when no worker
// waits stays in ready, its lease kept alive, for the next Next.
type source struct {
	sourceConfig
	poolSize int      // the pool's workers; at most prefetch per worker are held ahead
	levels   []*level // one per priority, highest first; see fetch.go
	polled   int      // the jobs the long polls may yet bring, all together (the fetcher's)

	msgs  chan delivery // subscriptions -> fetcher: jobs and statuses
	kick  chan struct{} // Next -> fetcher: demand changed
	fresh chan struct{} // agent -> fetcher: reconnected, requests lost

	// mu guards the fields below: Next, the fetcher, Done, the acker and the
	// lease keeper touch them. ready and waiters are never both non-empty.
	mu      sync.Mutex
	ready   []*nats.Msg        // jobs no worker has taken yet, highest priority first
	started []*heldJob         // jobs made, oldest first, until markRunning passes them
	waiters []waiter           // Next calls waiting for a job, oldest first
	held    map[*nats.Msg]bool // every job delivered and not yet finished
	avgRun  time.Duration      // moving average of attempt durations; 0: none yet
	avgSize int                // moving average of payload sizes; 0: none yet

	sweep     chan struct{}    // job -> markRunning: started was empty
	putBacks  chan struct{}    // a slot per put-back in flight (see putBack)
	finishing chan finishJob   // Done -> the publisher stage
	acking    chan []finishJob // publisher -> the acker stage, in bursts
	answers   *storeAnswers    // the store's answers to the publisher's states
	stop      chan struct{}
	wg        sync.WaitGroup
}

var _ broker.ReadySource = (*source)(nil)

// shortJob is the average attempt duration under which a pool prefetches:
// a job buffered behind such jobs waits little, and the round trip saved
// per job is worth more than the job itself.
const shortJob = 20 * time.Millisecond

// runningDelay is how long a job runs before its running state is stored.
// Shorter jobs go from queued straight to their end, which saves a store per
// job; GET /v1/jobs/{id} shows them queued meanwhile.
const runningDelay = 50 * time.Millisecond

// heldJob is what the source keeps in broker.Job.Handle. mu orders the
// running-state write (markRunning's) before the final one (Done's): after
// finished is set, only Done touches state.
type heldJob struct {
	msg      *nats.Msg
	started  time.Time // when job made it, with the monotonic clock
	mu       sync.Mutex
	finished bool
	requeued bool // a dead job queued again: it has a history from before
	// maxAttempts is the job's own limit, or the pool's.
	maxAttempts int
	state       wire.Job
	// earlier is the history before this attempt, once read (by
	// storeRunning, or by the publisher), so that it is read once.
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

type sourceConfig struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	kv          jetstream.KeyValue
	space       subject.Space
	typ         string
	host        string
	workers     int // the pool's size
	prefetch    int // at most this many jobs buffered per worker while jobs are short; 0: none
	holdBytes   int // bound on the payloads buffered ahead; 0: holdBytes
	maxAttempts int
	maxCrashes  int // crashed attempts that make a job a poison job; 0: no limit
	maxResult   int
	expires     time.Duration
	ackWait     time.Duration
	log         *slog.Logger
	// cancelled reports whether a job was cancelled; nil: none is.
	cancelled func(id string) bool
}

func newSource(cfg sourceConfig) (*source, error) {
	workers := max(cfg.workers, 1)
	s := &source{
		sourceConfig: cfg,
		poolSize:     workers,
		held:         make(map[*nats.Msg]bool),
		kick:         make(chan struct{}, 1),
		fresh:        make(chan struct{}, 1),
		sweep:        make(chan struct{}, 1),
		putBacks:     make(chan struct{}, putBackParallel),
		finishing:    make(chan finishJob, 256),
		acking:       make(chan []finishJob, 64),
		stop:         make(chan struct{}),
	}
	// Credit never exceeds waiting workers + prefetch, so msgs fills only
	// after a resize up, or for a large pool past maxMsgsBuffer, and then
	// only delays deliveries.
	s.msgs = make(chan delivery, min(max(2*workers*(1+cfg.prefetch)+64, 1024), maxMsgsBuffer))
	var err error
	if s.answers, err = newStoreAnswers(cfg.nc); err != nil {
		return nil, err
	}
	for _, p := range wire.Priorities {
		l := &level{prio: p, pullSubj: "$JS.API.CONSUMER.MSG.NEXT." + cfg.space.JobStream() + "." + cfg.space.ConsumerAt(cfg.typ, string(p))}
		if err := s.newInbox(l); err != nil {
			for _, l := range s.levels {
				_ = l.sub.Unsubscribe()
			}
			s.answers.close()
			return nil, err
		}
		s.levels = append(s.levels, l)
	}
	s.wg.Add(5)
	go s.fetcher()
	go s.publisher()
	go s.acker()
	go s.keepLeases()
	go s.markRunning()
	return s, nil
}

// close finishes every outcome already reported, releases the jobs no worker
// took so they are redelivered, and stops the source's goroutines. The pool
// must have stopped: no Next or Done may run during or after close.
func (s *source) close() {
	// Drain, not unsubscribe: jobs already in the client's queue reach the
	// fetcher (and are released below) instead of waiting out their lease.
	s.mu.Lock()
	var subs []*nats.Subscription
	for _, l := range s.levels {
		subs = append(subs, l.sub)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	for _, sub := range subs {
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if sub.Drain() != nil {
			continue
		}
		select {
		case <-closed:
		case <-ctx.Done():
			_ = sub.Unsubscribe()
		}
	}
	cancel()
	close(s.finishing)
	close(s.stop)
	s.wg.Wait()
	s.answers.close() // the acker is done with them
	// A reconnect during the drain may have renewed an inbox.
	s.mu.Lock()
	for i, l := range s.levels {
		if l.sub != subs[i] {
			_ = l.sub.Unsubscribe()
		}
	}
	left := s.ready
	s.ready = nil
	s.mu.Unlock()
	for len(s.msgs) > 0 {
		if d := <-s.msgs; !isStatus(d.m) {
			left = append(left, d.m)
		}
	}
	// The source's goroutines are gone; wg now counts the put-backs.
	for _, m := range left {
		h, _ := identify(m)
		s.putBack(h, "put back a job no worker took")
	}
	s.wg.Wait()
}

// maxMsgsBuffer bounds the deliveries buffered for the fetcher: 512 KiB.
const maxMsgsBuffer = 16 << 10

// maxHeldAhead bounds the jobs a pool holds ahead, whatever its size: well
// within the consumer's MaxAckPending (100,000) and maxMsgsBuffer.
const maxHeldAhead = 8 << 10

// putBackParallel bounds the jobs put back at once.
const putBackParallel = 16

// putBack puts back a job that reached no worker (see skip), on a
// goroutine of its own, up to putBackParallel at once: each is a read and
// a write of its state before its nak. A worker that exits with its queue
// full hands back up to 64 jobs, and the session that waits on Done to
// start its replacement should not wait for them one by one; a stopping
// pool may hand back hundreds held ahead. The order within a job stays:
// its skip is recorded before it is redelivered. what names the put-back
// in a log line if the nak fails.
func (s *source) putBack(h *heldJob, what string) {
	s.putBacks <- struct{}{}
	// Before close, the source's own goroutines keep wg above zero; close
	// calls it only after its wg.Wait, and waits again.
	s.wg.Go(func() {
		defer func() { <-s.putBacks }()
		s.skip(h, 0, what)
	})
}

// identify returns the held job of a delivered message, with its id,
// batch and creation time, and the delivery's metadata (nil if none).
func identify(m *nats.Msg) (*heldJob, *nats.MsgMetadata) {
	h := &heldJob{msg: m}
	h.state.Batch = m.Header.Get(wire.HeaderBatch)
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

// skip puts back a delivered job that no worker ran, for any host to take
// after delay: the delivery is counted as skipped in its state, not as an
// attempt. what names the put-back in a log line if the nak fails.
func (s *source) skip(h *heldJob, delay time.Duration, what string) {
	s.recordSkip(h)
	s.release(h.msg)
	var err error
	if delay > 0 {
		err = h.msg.NakWithDelay(delay)
	} else {
		err = h.msg.Nak()
	}
	if err != nil {
		s.log.Warn(what+"; it comes back when its lease ends", "job", h.state.ID, "err", err)
	}
}

// TryNext implements broker.ReadySource.
func (s *source) TryNext(maxPayload int) (*broker.Job, bool) {
	for {
		s.mu.Lock()
		if len(s.ready) == 0 || (maxPayload >= 0 && len(s.ready[0].Data) > maxPayload) {
			s.mu.Unlock()
			return nil, false
		}
		m := s.ready[0]
		s.ready = s.ready[1:]
		s.mu.Unlock()
		s.poke()
		if job, ok := s.take(m); ok {
			return job, true
		}
	}
}

// Next implements broker.Source.
func (s *source) Next(ctx context.Context) (*broker.Job, error) {
	for {
		m, err := s.await(ctx)
		if err != nil {
			return nil, err
		}
		if job, ok := s.take(m); ok {
			return job, nil
		}
	}
}

// take turns a delivered message into a job for a worker. A payload that is
// not JSON cannot go on the channel: such a job never reaches a worker and
// is dead at once, its payload kept as a JSON string.
func (s *source) take(m *nats.Msg) (*broker.Job, bool) {
	if s.deferred(m) {
		return nil, false
	}
	job := s.job(m)
	switch {
	case s.isCancelled(job.ID):
		s.Done(job, broker.Outcome{Err: "cancelled before it started"})
		return nil, false
	case !json.Valid(m.Data):
		job.Payload, _ = json.Marshal(string(m.Data))
		s.Done(job, broker.Outcome{Err: "payload is not valid JSON", Permanent: true})
		return nil, false
	}
	return job, true
}

// deferred puts back a delayed job that came before its time (header
// Conductor-Not-Before): JetStream redelivers it then, and the early
// delivery is counted as skipped, not as an attempt. It looks at the
// message alone, before the job is made from it.
func (s *source) deferred(m *nats.Msg) bool {
	v := m.Header.Get(wire.HeaderNotBefore)
	if v == "" {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	wait := time.Until(at)
	if err == nil && wait <= 0 {
		return false
	}
	h, _ := identify(m)
	if err != nil {
		s.log.Warn("ignoring a bad not-before header; the job runs now", "job", h.state.ID, "header", wire.HeaderNotBefore, "value", v)
		return false
	}
	s.skip(h, wait, "put back a delayed job")
	return true
}

func (s *source) isCancelled(id string) bool { return s.cancelled != nil && s.cancelled(id) }

// await returns the next delivered job, waiting for one if none is ready.
func (s *source) await(ctx context.Context) (*nats.Msg, error) {
	s.mu.Lock()
	if len(s.ready) > 0 {
		m := s.ready[0]
		s.ready = s.ready[1:]
		s.mu.Unlock()
		s.poke()
		return m, nil
	}
	ch := make(chan *nats.Msg, 1)
	load, _ := broker.WorkerLoad(ctx)
	s.waiters = append(s.waiters, waiter{ch: ch, load: load})
	s.mu.Unlock()
	s.poke()

	var err error
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.stop:
		err = errors.New("job source closed")
	}
	s.mu.Lock()
	if i := slices.IndexFunc(s.waiters, func(w waiter) bool { return w.ch == ch }); i >= 0 {
		s.waiters = slices.Delete(s.waiters, i, i+1)
	}
	select {
	case m := <-ch: // it came as we gave up: to another waiter, or first in line
		if len(s.waiters) > 0 {
			s.takeWaiterLocked() <- m
		} else {
			s.ready = slices.Insert(s.ready, 0, m)
		}
	default:
	}
	s.mu.Unlock()
	s.poke()
	return nil, err
}

// waiter is a Next call waiting for a job, and the load of its worker.
type waiter struct {
	ch   chan *nats.Msg
	load int64
}

// takeWaiterLocked removes and returns the waiter whose worker has the
// least load (its RSS), the oldest of those equal: when several workers
// are idle, a job goes to the least loaded. s.mu is held; waiters is not
// empty.
func (s *source) takeWaiterLocked() chan *nats.Msg {
	best := 0
	for i, w := range s.waiters {
		if w.load < s.waiters[best].load {
			best = i
		}
	}
	ch := s.waiters[best].ch
	s.waiters = slices.Delete(s.waiters, best, best+1)
	return ch
}

// deliver hands a job to a waiting Next (see takeWaiterLocked), or keeps
// it in ready, behind the jobs of its priority and above lower ones.
func (s *source) deliver(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[m] = true
	if size := max(len(m.Data), 1); s.avgSize == 0 {
		s.avgSize = size
	} else {
		s.avgSize = max(s.avgSize+(size-s.avgSize)/8, 1)
	}
	if len(s.waiters) > 0 {
		s.takeWaiterLocked() <- m
		return
	}
	r := s.rank(m)
	i := len(s.ready)
	for i > 0 && s.rank(s.ready[i-1]) > r {
		i--
	}
	s.ready = slices.Insert(s.ready, i, m)
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

// resize sets the pool's size, which bounds the prefetch.
func (s *source) resize(workers int) {
	s.mu.Lock()
	s.poolSize = max(workers, 1)
	s.mu.Unlock()
	s.poke()
}

// setLimits sets the pool's max_attempts and max_crashes (a reload): the
// jobs taken from now on get them.
func (s *source) setLimits(maxAttempts, maxCrashes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxAttempts, s.maxCrashes = maxAttempts, maxCrashes
}

// limits returns the pool's max_attempts and max_crashes.
func (s *source) limits() (maxAttempts, maxCrashes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxAttempts, s.maxCrashes
}

// demand reports the workers waiting, and how many jobs the source wants at
// hand or on their way (target): one per waiting worker plus the prefetch.
func (s *source) demand() (waiting, target, ready int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters), len(s.waiters) + s.prefetchLocked(), len(s.ready)
}

// reconnected tells the fetcher that the connection to NATS was re-made:
// the server may have forgotten its pull requests, so it asks again now
// rather than when they would have expired.
func (s *source) reconnected() {
	select {
	case s.fresh <- struct{}{}:
	default:
	}
}

func (s *source) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// prefetchLocked is how many jobs to hold beyond the waiting workers: none until
// the pool's jobs are known to be short, so long jobs never wait on a busy
// host while another host is idle. Short jobs are held as many as the pool
// runs in holdFor, within prefetch per worker and holdBytes of payloads: the more a
// host holds, the more jobs each message to the server carries, and the
// less the server spends per job.
func (s *source) prefetchLocked() int {
	if s.avgRun == 0 || s.avgRun >= shortJob {
		return 0
	}
	n := min(s.prefetch*s.poolSize, maxHeldAhead)
	n = min(n, int(int64(s.poolSize)*int64(holdFor)/int64(s.avgRun)))
	if s.avgSize > 0 {
		n = min(n, cmp.Or(s.holdBytes, holdBytes)/s.avgSize)
	}
	return n
}

// holdFor bounds how long the jobs a pool holds ahead keep its workers busy:
// a job held by one host waits about this long at most while another host
// may be idle.
const holdFor = 100 * time.Millisecond

// holdBytes bounds the payloads a pool holds ahead, by their average size.
const holdBytes = 8 << 20

// observe folds one attempt's duration into the moving average.
func (s *source) observe(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.avgRun == 0 {
		s.avgRun = max(d, 1)
		return
	}
	s.avgRun = max(s.avgRun+(d-s.avgRun)/8, 1)
}

func (s *source) release(m *nats.Msg) {
	s.mu.Lock()
	delete(s.held, m)
	s.mu.Unlock()
}

// job turns a delivered message into a broker job and records that it runs.
func (s *source) job(m *nats.Msg) *broker.Job {
	mono := time.Now() // with its monotonic reading, for markRunning
	now := mono.UTC()
	h, md := identify(m)
	st := &h.state
	st.Type = s.typ
	st.Status = wire.StatusRunning
	st.UpdatedAt = now
	if p := s.priority(m); p != wire.PriorityNormal {
		st.Priority = p
	}
	h.requeued = m.Header.Get(wire.HeaderRequeued) != ""
	st.Attempts = 1
	if md != nil {
		st.Attempts = int(md.NumDelivered)
	}
	if h.hasEarlier() {
		// A redelivery: its earlier deliveries that reached no worker are
		// not attempts, and its history is read here once. Only
		// redeliveries pay this read.
		if prev := s.previous(st.ID); prev != nil {
			st.Skipped = prev.Skipped
			st.Attempts = max(st.Attempts-prev.Skipped, 1)
			h.earlier, h.readEarlier = prev.History, true
		}
	}
	h.maxAttempts, _ = s.limits()
	if v := m.Header.Get(wire.HeaderMaxAttempts); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 {
			h.maxAttempts = n
		} else {
			s.log.Warn("ignoring a bad max attempts header; the pool's max_attempts applies", "job", st.ID, "header", wire.HeaderMaxAttempts, "value", v)
		}
	}
	// The earlier attempts' history is read by the publisher, off the
	// worker's path (see withHistory).
	st.History = []wire.Attempt{{Attempt: st.Attempts, Host: s.host, StartedAt: now}}
	h.started = mono
	s.mu.Lock()
	s.started = append(s.started, h)
	first := len(s.started) == 1
	s.mu.Unlock()
	if first {
		select {
		case s.sweep <- struct{}{}:
		default:
		}
	}
	job := &broker.Job{ID: st.ID, Type: s.typ, Payload: m.Data, Attempt: st.Attempts, Handle: h}
	if v := m.Header.Get(wire.HeaderTimeout); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			job.Timeout = d
		} else {
			s.log.Warn("ignoring a bad timeout header; the pool's job_timeout applies", "job", st.ID, "header", wire.HeaderTimeout, "value", v)
		}
	}
	return job
}

// markRunning stores the running state of each job that runs past
// runningDelay, between runningDelay and 1.5 times that after it started.
// The jobs made are in started, oldest first; it wakes when the oldest is
// due, but no sooner than runningDelay/2 after its last pass, so that a
// pool of short jobs costs at most a pass per runningDelay/2, not a timer
// per job. A redelivered job's running state needs its history read first:
// that is done on a goroutine of its own, so that a slow read holds up no
// other job.
func (s *source) markRunning() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		i := 0
		for i < len(s.started) && now.Sub(s.started[i].started) >= runningDelay {
			i++
		}
		due := slices.Clone(s.started[:i])
		clear(s.started[:i]) // no longer kept alive by the slice
		s.started = s.started[i:]
		var next <-chan time.Time
		if len(s.started) > 0 {
			t.Reset(max(runningDelay-now.Sub(s.started[0].started), runningDelay/2))
			next = t.C
		}
		s.mu.Unlock()
		for _, h := range due {
			if h.hasEarlier() {
				s.wg.Go(func() { s.storeRunning(h) }) // markRunning's own count keeps wg above 0
				continue
			}
			s.storeRunning(h)
		}
		select {
		case <-s.stop:
			return
		case <-s.sweep:
		case <-next:
		}
	}
}

// storeRunning stores the running state of a job that has not ended yet.
// Fire and forget: the final state is published later on the same
// connection (see heldJob), and so lands after this one.
func (s *source) storeRunning(h *heldJob) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.finished {
		return
	}
	st := h.state
	if h.hasEarlier() {
		if !h.readEarlier {
			// Off the worker's path: this runs only for a job past runningDelay.
			h.earlier, h.readEarlier = s.history(st.ID), true
		}
		st.History = append(slices.Clone(h.earlier), st.History...)
	}
	if data, err := json.Marshal(&st); err == nil {
		// No reply subject: the store does not answer.
		_ = s.nc.PublishMsg(&nats.Msg{Subject: subject.KV(s.space.StateBucket(), h.state.ID), Data: data})
	}
}

// quarantine makes dead a failed job whose worker died running it in
// maxCrashes of its attempts: a poison job, kept with that evidence
// instead of killing more workers.
func (s *source) quarantine(f *finishJob) {
	st := &f.held.state
	_, maxCrashes := s.limits()
	if st.Status != wire.StatusFailed || maxCrashes <= 0 || !st.History[len(st.History)-1].Crashed {
		return
	}
	crashes := 0
	for _, a := range st.History {
		if a.Crashed {
			crashes++
		}
	}
	if crashes < maxCrashes {
		return
	}
	st.Status = wire.StatusDead
	st.Error = fmt.Sprintf("poison job: its worker died in %d of its attempts (last: %s)", crashes, st.Error)
	st.Payload = f.held.msg.Data
	if !json.Valid(st.Payload) {
		st.Payload, _ = json.Marshal(string(st.Payload))
	}
	f.retry = -1
	s.log.Error("poison job quarantined as dead", "pool", s.typ, "job", st.ID, "crashes", crashes)
}

// withHistory puts the attempts a retried job made before this one in
// front of its state's history.
func (s *source) withHistory(h *heldJob) {
	if !h.hasEarlier() {
		return // nothing before it: save the read
	}
	h.mu.Lock()
	earlier, read := h.earlier, h.readEarlier
	h.mu.Unlock()
	if !read {
		earlier = s.history(h.state.ID)
	}
	st := &h.state
	st.History = append(slices.Clone(earlier), st.History...)
	if n := len(st.History); n > wire.MaxHistory {
		st.History = st.History[n-wire.MaxHistory:]
	}
}

// history reads the attempts a job made before this one.
func (s *source) history(id string) []wire.Attempt {
	if prev := s.previous(id); prev != nil {
		return prev.History
	}
	return nil
}

// previous reads the stored state of job id, or nil.
func (s *source) previous(id string) *wire.Job {
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
	return &prev
}

// recordSkip counts, in the stored state of h's job, a delivery that never
// reached a worker. It is a read-modify-write against concurrent writers
// (a submitter creating the queued state); should it fail, the next
// delivery counts one attempt too many, which is logged.
func (s *source) recordSkip(h *heldJob) {
	id := h.state.ID
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st := wire.Job{ID: id, Type: s.typ, Status: wire.StatusQueued, Batch: h.state.Batch, CreatedAt: h.state.CreatedAt}
		var rev uint64
		e, err := s.kv.Get(ctx, id)
		switch {
		case err == nil:
			if json.Unmarshal(e.Value(), &st) != nil {
				cancel()
				return // not a state of ours: leave it
			}
			rev = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			cancel()
			continue
		}
		st.Skipped++
		st.UpdatedAt = time.Now().UTC()
		data, _ := json.Marshal(&st)
		if rev == 0 {
			_, err = s.kv.Create(ctx, id, data)
		} else {
			_, err = s.kv.Update(ctx, id, data, rev)
		}
		cancel()
		if err == nil {
			return
		}
	}
	s.log.Warn("could not record a delivery that reached no worker; the job's next attempt number counts it", "job", id)
}

// jobID is the id of a job message: its Conductor-Job-Id header, else its
// Nats-Msg-Id header, else "seq-N" from its stream sequence. A header that
// is not a valid id (it could not be a state key) is passed over.
func jobID(m *nats.Msg, seq uint64) string {
	if id := m.Header.Get(wire.HeaderJobID); id != "" && subject.Token("job id", id) == nil {
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
	h.mu.Lock()
	h.finished = true
	h.mu.Unlock()
	if out.NotStarted {
		// Back to the queue at once, for any worker. No attempt ended, but
		// JetStream counts the delivery: the state counts it as skipped
		// first, so that the next delivery's attempt number leaves it out.
		s.putBack(h, "put back a job that reached no worker")
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
			s.observe(out.Ended.Sub(out.Started))
		}
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
	case s.isCancelled(st.ID):
		st.Status = wire.StatusCancelled
		st.Error = out.Err
	case out.Permanent || st.Attempts >= h.maxAttempts:
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
	s.finishing <- finishJob{held: h, retry: retry}
}

// Backoff is the delay before retrying a job whose attempt failed: 1s,
// doubling per attempt, capped at 5m, with 20% jitter.
func Backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 9)
	d = min(d, 5*time.Minute)
	return d - d/10 + rand.N(d/5+1)
}

// maxBurst bounds the outcomes the publisher takes at once.
const maxBurst = 256

// linger is how long the publisher waits for more outcomes to join a burst
// while more short jobs are running: their results are stored up to this
// much later, and the server spends less per job.
const linger = time.Millisecond

// publisher stores outcomes' states without waiting for the store's
// answers, so that stores pipeline; the acker waits for the answers in
// order. It takes outcomes in bursts (see collect) and passes each burst on
// whole: a burst reaches the server in a few writes, not one per job,
// which costs the server far less per job.
func (s *source) publisher() {
	defer s.wg.Done()
	defer close(s.acking)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for f := range s.finishing {
		burst := s.collect(f, timer)
		stores := s.answers.burst()
		for i := range burst {
			burst[i] = s.publish(burst[i], stores)
		}
		s.answers.seal(stores)
		s.acking <- burst
	}
}

// collect returns f and the outcomes that follow it at once, or within
// linger while more short jobs are held.
func (s *source) collect(f finishJob, timer *time.Timer) []finishJob {
	burst := make([]finishJob, 1, min(1+len(s.finishing), maxBurst))
	burst[0] = f
	var wait <-chan time.Time
	if s.moreSoon(len(burst)) {
		timer.Reset(linger)
		defer timer.Stop()
		wait = timer.C
	}
	for len(burst) < maxBurst {
		select {
		case f, ok := <-s.finishing:
			if !ok {
				return burst
			}
			burst = append(burst, f)
			continue
		default:
		}
		if wait == nil {
			return burst
		}
		select {
		case f, ok := <-s.finishing:
			if !ok {
				return burst
			}
			burst = append(burst, f)
		case <-wait:
			return burst
		}
	}
	return burst
}

// moreSoon reports whether outcomes beyond the n taken are on their way
// shortly: the pool's jobs are short and it holds more.
func (s *source) moreSoon(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.avgRun > 0 && s.avgRun < shortJob && len(s.held) > n
}

// publish sends f's state to the store, as part of stores, and returns f
// with the state on its way.
func (s *source) publish(f finishJob, stores *storeBurst) finishJob {
	s.withHistory(f.held)
	s.quarantine(&f)
	// A state is about 330 bytes for a short job; the buffer is kept until
	// the store answers, so each gets its own.
	data, err := f.held.state.AppendJSON(make([]byte, 0, 512))
	if err != nil {
		// The result is valid JSON from the broker; this cannot happen.
		panic(fmt.Sprintf("agent: encode job state: %v", err))
	}
	f.data = data
	f.store = s.answers.send(stores, subject.KV(s.space.StateBucket(), f.held.state.ID), f.data)
	return f
}

// acker acks (or naks) each job once its state is stored, then announces
// it: an event per job, then one wire.Ends for the jobs acked together. A
// burst's acks and events follow its stores' answers together; if a store
// is slow to answer, the jobs stored before it go first.
func (s *source) acker() {
	defer s.wg.Done()
	var (
		ready []finishJob
		ends  = wire.Ends{Type: s.typ}
		buf   []byte
	)
	ackReady := func() {
		if len(ready) == 0 {
			return
		}
		ends.Jobs = ends.Jobs[:0]
		for _, f := range ready {
			s.ack(f)
			st := &f.held.state
			ends.Jobs = append(ends.Jobs, wire.End{ID: st.ID, Status: st.Status, Batch: st.Batch})
		}
		ready = ready[:0]
		// After the events: conductord reads a state it learns of here.
		buf = ends.AppendJSON(buf[:0])
		if err := s.nc.Publish(s.space.JobEnds(s.typ), buf); err != nil {
			s.log.Warn("announce job ends", "pool", s.typ, "jobs", len(ends.Jobs), "err", err)
		}
	}
	for burst := range s.acking {
		for _, f := range burst {
			if !s.stored(f, ackReady) {
				// Leave the job unacked: it is redelivered when its lease
				// ends, and its state is written again then.
				s.release(f.held.msg)
				continue
			}
			ready = append(ready, f)
		}
		ackReady()
	}
}

// ack acks or naks the job of f, whose state is stored, and announces it.
func (s *source) ack(f finishJob) {
	if f.held.state.Status == wire.StatusDead {
		s.storeDead(f)
	}
	// Released first: a lease extension sent after a delayed nak would
	// cut the retry's delay short (see keepLeases).
	m := f.held.msg
	s.release(m)
	var err error
	if f.retry < 0 {
		err = m.Ack()
	} else {
		err = m.NakWithDelay(f.retry)
	}
	if err != nil {
		s.log.Warn("ack job", "pool", s.typ, "job", f.held.state.ID, "err", err)
	}
	ev := nats.NewMsg(s.space.JobEvent(s.typ, string(f.held.state.Status)))
	ev.Header.Set(wire.HeaderJobID, f.held.state.ID)
	if b := f.held.state.Batch; b != "" {
		ev.Header.Set(wire.HeaderBatch, b)
	}
	ev.Data = f.data
	_ = s.nc.PublishMsg(ev)
}

// storeDead indexes a dead job in the dead bucket, so that it can be
// listed and re-queued. Its state, payload included, is stored already; a
// failure here only leaves it out of the list, and is logged.
func (s *source) storeDead(f finishJob) {
	subj := subject.KV(s.space.DeadBucket(), f.held.state.ID)
	delay := 100 * time.Millisecond
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.js.Publish(ctx, subj, f.data)
		cancel()
		if err == nil {
			return
		}
		s.log.Warn("index dead job; retrying", "pool", s.typ, "job", f.held.state.ID, "err", err)
		if !s.wait(delay) {
			break
		}
		delay *= 2
	}
	s.log.Error("dead job not indexed: GET /v1/jobs?status=dead will not list it; GET /v1/jobs/ID shows it", "pool", s.typ, "job", f.held.state.ID)
}

// storeTimeout bounds the wait for the answer to a state store: an answer
// can be lost (a reconnect, a leader change), and the acker must go on.
const storeTimeout = 10 * time.Second

// slowStore is how long the acker waits for a store's answer before it
// acks the jobs of its burst already stored.
const slowStore = 20 * time.Millisecond

// stored waits for the outcome's state to be stored, writing it again
// synchronously a few times if the asynchronous write failed. slow is
// called once the wait is longer than slowStore.
func (s *source) stored(f finishJob, slow func()) bool {
	if f.store != nil {
		err := s.answers.wait(f.store, slow)
		if err == nil {
			return true
		}
		s.log.Warn("store job state; retrying", "pool", s.typ, "job", f.held.state.ID, "err", err)
	}
	slow()
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
		// Under the lock, so that no extension follows the release that
		// precedes an ack or nak.
		s.mu.Lock()
		for m := range s.held {
			if err := m.InProgress(); err != nil && !errors.Is(err, nats.ErrMsgAlreadyAckd) {
				s.log.Debug("extend job lease", "pool", s.typ, "err", err)
			}
		}
		s.mu.Unlock()
	}
}

func isStatus(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") != ""
}
