package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// slot is one worker of a pool: a goroutine that starts a process, serves
// it until it exits, and decides whether and when to start the next
// (start -> wait -> decide -> delay), until the slot is retired or the pool
// stops. A recycle or an upgrade starts a new slot at the same index and
// retires the old one once the new one is ready.
//
// Ownership: the fields set by newSlot are read-only after; backoff, carry
// and starts belong to the slot goroutine; info is written by the slot
// goroutine and read by Pool.Workers, both under mu, as are the retire
// fields. Lock order: Pool.mu before slot.mu.
//
// Lifecycle: a slot is not a startstop.Service but a part of its pool, and
// lives once. Pool.addSlotLocked starts its goroutine, counted in the
// pool's slotWG; its ctx, a child of the pool's intake, bounds its life;
// retire cancels ctx with a reason and a timeout and does not wait, and
// ended is closed when the goroutine has returned. The supervisor waits on
// ended or gives up when the pool stops (Pool.awaitEnd), which a blocking
// Stop would not let it do; the pool's Stop waits for every slot.
type slot struct {
	pool   *Pool
	index  int
	gen    *generation
	reason Reason       // why the first process starts
	log    *slog.Logger // pool's, with index
	cfg    procConfig

	ctx    context.Context // done when the slot is retired or the pool stops
	cancel context.CancelFunc
	// recycleAge is the Spec.Recycle of this slot, with its jitter.
	recycleAge time.Duration

	readyC    chan struct{} // closed at the first ready of any of its processes
	readyOnce sync.Once
	exitC     chan struct{} // closed when its first process has exited (or failed to start)
	exitOnce  sync.Once
	ended     chan struct{} // closed when the slot goroutine returns

	wantRecycle atomic.Bool // the worker did its max_jobs
	// lastRSS is the resident memory of its process at the last reading
	// (Pool.Workers, every heartbeat; the max_rss check): a crash report
	// quotes it, as the memory of a dead process cannot be read.
	lastRSS atomic.Int64
	// hardRSS: the current process's memory cgroup has max_rss as its
	// limit, which is then the truth: no recycle for it.
	hardRSS atomic.Bool

	cancelC chan string // Pool.Cancel -> session: a job id to cut short
	// changedC and lostC tell the session of a lookup key changed, and
	// of all of them (Pool.LookupChanged, LookupsLost): values its
	// worker keeps may be stale (requests.go).
	changedC chan lookupKey
	lostC    chan struct{}
	// messageC holds the messages for its worker (messages.go);
	// takesMessages is set while its process takes them (its ready op).
	messageC      chan json.RawMessage
	takesMessages atomic.Bool
	// queuedIDs are the ids of the jobs queued behind the running one
	// (session.queued), for Pool.Cancel; guarded by mu.
	queuedIDs []string

	backoff *backoff
	// carry is a job taken from the Source that no process has received
	// (the write to fd 3 failed, or Next returned after the worker became
	// unavailable). It goes to the next ready process of this slot.
	carry  *Job
	starts int // processes started

	mu           sync.Mutex
	info         Worker        // guarded by mu
	retireReason Reason        // guarded by mu; set before ctx is cancelled
	stopTimeout  time.Duration // guarded by mu; zero: the pool's
	exit1        string        // guarded by mu; how the first process ended
}

func newSlot(p *Pool, index int, reason Reason, gen *generation) *slot {
	ctx, cancel := context.WithCancel(p.intake)
	s := &slot{
		pool:     p,
		index:    index,
		gen:      gen,
		reason:   reason,
		log:      p.log.With("index", index),
		ctx:      ctx,
		cancel:   cancel,
		readyC:   make(chan struct{}),
		cancelC:  make(chan string, 1),
		changedC: make(chan lookupKey, changedBuffer),
		lostC:    make(chan struct{}, 1),
		messageC: make(chan json.RawMessage, messageBuffer),
		exitC:    make(chan struct{}),
		ended:    make(chan struct{}),
		backoff:  newBackoff(gen.spec),
		info: Worker{
			Host:    p.host,
			Pool:    p.spec.Name,
			Index:   index,
			State:   WorkerStarting,
			Version: gen.version,
		},
	}
	if gen.spec.Recycle > 0 {
		s.recycleAge = time.Duration(float64(gen.spec.Recycle) * (0.9 + 0.2*rand.Float64()))
	}
	s.cfg = newProcConfig(gen.spec, gen.path, p.host, index, p.listener, s.log)
	if p.cg != nil {
		s.cfg.cg, s.cfg.maxRSS, s.cfg.pids = p.cg, gen.spec.MaxRSS, gen.spec.Pids
		s.cfg.noCloneInto = p.test.noCloneInto
		s.cfg.leafName = func() string { return strconv.Itoa(index) + "-" + strconv.FormatInt(p.leafSeq.Add(1), 10) }
	}
	if p.onOutput != nil {
		s.cfg.output = s.forwardOutput
	}
	return s
}

// run is the slot goroutine: start -> wait -> decide -> delay, until the
// slot is retired or the pool stops.
func (s *slot) run(sp *spawner) {
	defer s.finish()
	reason := s.reason
	for s.ctx.Err() == nil {
		run := s.runProcess(sp, reason) // start, wait
		if s.ctx.Err() != nil {
			return // a deliberate stop, not a crash: no restart
		}
		if !s.delayRestart(run) { // decide, delay
			return
		}
		reason = ReasonRestart
	}
}

// retire stops the slot gracefully: its process finishes its job within
// timeout (zero: the pool's StopTimeout) and is stopped; no restart.
func (s *slot) retire(reason Reason, timeout time.Duration) {
	s.mu.Lock()
	if s.retireReason == "" {
		s.retireReason, s.stopTimeout = reason, timeout
	}
	s.mu.Unlock()
	s.cancel()
}

// stopping returns why the slot is stopping (a Reason) and how long
// its job may still run.
func (s *slot) stopping() (reason Reason, timeout time.Duration) {
	s.mu.Lock()
	reason, timeout = s.retireReason, s.stopTimeout
	s.mu.Unlock()
	if reason == "" {
		reason = ReasonStop // the pool is stopping
	}
	if timeout <= 0 {
		timeout = s.pool.stopTimeoutOverride()
	}
	if timeout <= 0 {
		timeout = s.gen.spec.StopTimeout
	}
	return reason, timeout
}

// rss returns the resident memory of the slot's process pid as last read
// (every heartbeat reads it), reading it now if it never was.
func (s *slot) rss(pid int) int64 {
	if rss := s.lastRSS.Load(); rss > 0 {
		return rss
	}
	rss := residentBytes(pid)
	s.lastRSS.Store(rss)
	return rss
}

// stopCause describes, for the outcome of a job its stop cut short, why
// the slot is stopping.
func (s *slot) stopCause() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retireReason == "" {
		return "pool stopped"
	}
	return "worker stopped (" + string(s.retireReason) + ")"
}

// markReady records that a process of the slot said ready (or, for a
// service, started).
func (s *slot) markReady(pid int, first bool) {
	// Ready before the event, so that whoever sees it sees the worker
	// (and the pool, Info) up; the session sets its idle state next.
	s.update(func(w *Worker) {
		if w.State == WorkerStarting {
			w.State = WorkerReady
		}
	})
	s.readyOnce.Do(func() { close(s.readyC) })
	if first {
		s.pool.emit(Event{Kind: EventWorkerReady, Index: s.index, PID: pid})
	}
}

// firstExit says how the slot's first process ended.
func (s *slot) firstExit() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit1
}

// recycleReason says why the slot's worker should be recycled now, or "".
func (s *slot) recycleReason() string {
	spec := &s.gen.spec
	select {
	case <-s.readyC:
	default:
		return "" // not ready yet: nothing to gain
	}
	if s.wantRecycle.Load() {
		return fmt.Sprintf("finished max_jobs (%d) jobs", spec.MaxJobs)
	}
	w := s.snapshot()
	if w.PID == 0 {
		return ""
	}
	if s.recycleAge > 0 && time.Since(w.Started) >= s.recycleAge {
		return fmt.Sprintf("up for more than recycle (%s)", spec.Recycle)
	}
	if spec.MaxRSS > 0 {
		rss := residentBytes(w.PID)
		if rss > 0 { // 0: gone; keep the last reading for its crash report
			s.lastRSS.Store(rss)
		}
		if rss > spec.MaxRSS && !s.hardRSS.Load() {
			return fmt.Sprintf("resident memory %d bytes over max_rss (%d)", rss, spec.MaxRSS)
		}
	}
	return ""
}

// requestRecycle asks the supervisor to replace this slot's worker.
func (s *slot) requestRecycle() {
	s.wantRecycle.Store(true)
	select {
	case s.pool.poke <- struct{}{}:
	default: // a poke is pending already
	}
}

// processRun is what the restart policy needs to know of a process that
// ended: when it first said ready (its start for ProtocolNone; zero if
// never) and how many jobs it finished.
type processRun struct {
	readyAt          time.Time
	finished         int
	stoppedOnPurpose bool   // killed for its job's timeout or cancel: no failure of its own
	exit             string // how it ended, for reasons (describeExit); set by runProcess
}

// reasonLineBytes caps the stderr line quoted in a reason.
const reasonLineBytes = 120

// describeExit describes, for a reason, how p ended: its exit code or
// signal, and the last line of its stderr, quoted.
func describeExit(p *proc, oom bool) string {
	var why string
	switch {
	case oom:
		why = "oom-killed"
	case p.signal != "":
		why = "signal " + p.signal
	case p.code >= 0:
		why = "exit " + strconv.Itoa(p.code)
	default:
		why = p.exit
	}
	if line := p.stderr.last(1, reasonLineBytes); line != "" {
		why += " " + strconv.Quote(line)
	}
	return why
}

// runProcess starts one process and serves it until it has exited and been
// released.
func (s *slot) runProcess(sp *spawner, reason Reason) processRun {
	p, err := startProc(sp, s.cfg)
	if err != nil {
		s.log.Error("cannot start worker", "err", err)
		s.exited(Event{Kind: EventWorkerExit, Index: s.index, Reason: ReasonFailure, Exit: "start failed: " + err.Error()}, "start failed: "+err.Error())
		return processRun{exit: "start failed: " + err.Error()}
	}
	restartReason := s.snapshot().Reason
	s.starts++
	s.lastRSS.Store(0)
	s.hardRSS.Store(p.leaf != nil && p.leaf.MemoryLimited())
	s.wantRecycle.Store(false) // the previous process's max_jobs
	s.update(func(w *Worker) {
		w.PID, w.Started, w.State, w.Job, w.Reason = p.pid, p.started, WorkerStarting, "", ""
		if s.starts > 1 {
			w.Restarts++
			if restartReason != "" {
				w.Reason = "restarted after " + restartReason
			}
		}
	})
	s.log.Info("worker started", "pid", p.pid, "reason", string(reason))
	s.pool.emit(Event{Kind: EventWorkerStart, Index: s.index, PID: p.pid, Reason: reason})
	run := processRun{readyAt: p.started}
	if s.cfg.channel {
		run = newSession(s, p).run()
	} else {
		s.markReady(p.pid, s.starts == 1)
		s.serveService(p)
	}
	uptime := time.Since(p.started).Round(time.Millisecond)
	exit, oom := p.ended()
	if p.cgErr != nil {
		s.log.Warn("cgroups: a worker's cgroup not emptied or not removed", "pid", p.pid, "err", p.cgErr)
	}
	exitReason := ReasonFailure
	if s.ctx.Err() != nil {
		exitReason, _ = s.stopping()
		s.log.Info("worker exited", "pid", p.pid, "exit", exit, "reason", string(exitReason))
	} else {
		s.log.Warn("worker exited unexpectedly", "pid", p.pid, "exit", exit, "uptime", uptime)
	}
	if f := s.pool.test.procEnded; f != nil {
		f(p.pid, p.memPeak)
	}
	run.exit = describeExit(p, oom)
	s.exited(Event{
		Kind: EventWorkerExit, Index: s.index, PID: p.pid, Reason: exitReason,
		Exit: exit, Code: p.code, Signal: p.signal, OOM: oom, Uptime: Duration(uptime),
	}, run.exit)
	return run
}

// exited records the end of a process, or its failed start, described by
// e (and for reasons by why), and announces it.
func (s *slot) exited(e Event, why string) {
	now := time.Now()
	s.mu.Lock()
	if s.exit1 == "" {
		s.exit1 = e.Exit
	}
	s.info.PID, s.info.State, s.info.Job = 0, WorkerExited, ""
	s.info.LastExit, s.info.LastExitAt, s.info.Reason = e.Exit, now.UTC(), why
	s.mu.Unlock()
	s.pool.workersChanged()
	s.exitOnce.Do(func() { close(s.exitC) })
	s.pool.emit(e)
}

// serveService runs a ProtocolNone process: it is ready once started and
// only watched until it exits or the slot stops.
func (s *slot) serveService(p *proc) {
	s.setState(WorkerReady)
	stop, kill := s.ctx.Done(), s.pool.killing
	for {
		select {
		case <-p.exited:
			p.release(outputGrace)
			return
		case <-stop:
			stop = nil
			s.setState(WorkerStopping)
			p.terminate()
		case <-kill:
			kill = nil
			p.kill()
		}
	}
}

// delayRestart asks the restart policy what to do after a process that
// ended, and waits accordingly. It returns false if the slot stopped
// meanwhile.
func (s *slot) delayRestart(run processRun) bool {
	var healthy time.Duration
	if !run.readyAt.IsZero() {
		healthy = time.Since(run.readyAt)
	}
	if run.stoppedOnPurpose {
		return true // refilled at once; neither backoff nor breaker
	}
	failedStart := run.finished == 0 && (run.readyAt.IsZero() || healthy < failedStartUptime)
	delay := s.backoff.next(healthy, run.finished > 0)
	exit := run.exit
	if n := s.backoff.failures; n > 1 {
		exit += fmt.Sprintf(" x%d in a row", n)
	}
	for {
		ok, wait := s.pool.admitRestart(time.Now(), failedStart, exit)
		if ok {
			break
		}
		// Do not keep a job through a pause: another worker may be free.
		s.giveBack("worker keeps failing; restarts paused")
		s.setBackoff(fmt.Sprintf("restarts paused (crash loop); %s; retry at %s", exit, formatTime(time.Now().Add(wait))))
		if !s.sleep(wait) {
			return false
		}
	}
	if delay > 0 {
		s.giveBack("worker restarting")
		s.setBackoff(fmt.Sprintf("%s; restart at %s", exit, formatTime(time.Now().Add(delay))))
		return s.sleep(delay)
	}
	return true
}

// setBackoff marks the slot waiting to restart, for reason.
func (s *slot) setBackoff(reason string) {
	s.update(func(w *Worker) { w.State, w.Reason = WorkerBackoff, reason })
}

// sleep waits d, or until the slot stops (then it returns false).
func (s *slot) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// giveBack reports the carried job, if any, as not started with reason, so that
// the Source can hand it to another worker; or, if processes failed to take
// it already, as an attempt that failed.
func (s *slot) giveBack(reason string) {
	if s.carry == nil {
		return
	}
	j := s.carry
	s.carry = nil
	if j.handoffs > 0 {
		// Written to a process that did not take it: an attempt that
		// failed, not a job that reached none (see session.wrote).
		s.pool.src.Done(j, Outcome{Err: fmt.Sprintf("could not be handed to a worker in %d tries (last: %s)", j.handoffs, reason), Index: s.index, Ended: time.Now()})
		return
	}
	s.pool.src.Done(j, Outcome{NotStarted: true, Err: reason, Index: s.index})
}

// finish ends the slot goroutine.
func (s *slot) finish() {
	s.giveBack("worker stopped before the job started")
	s.update(func(w *Worker) { w.PID, w.State, w.Job = 0, WorkerExited, "" })
	s.pool.removeSlot(s)
	s.cancel()
	close(s.ended)
}

// forwardOutput hands one output line to the pool's OnOutput.
func (s *slot) forwardOutput(stream string, pid int, line string) {
	s.pool.onOutput(LogLine{
		Time: time.Now().UTC(), Host: s.pool.host, Pool: s.pool.spec.Name,
		Index: s.index, PID: pid, Stream: stream, Line: line,
	})
}

func (s *slot) setState(state WorkerState) {
	s.update(func(w *Worker) { w.State = state })
}

// update changes info; only the slot goroutine calls it. A worker that is
// up (ready, busy, recycling) has no reason.
func (s *slot) update(f func(*Worker)) {
	s.mu.Lock()
	f(&s.info)
	switch s.info.State {
	case WorkerReady, WorkerBusy, WorkerRecycling:
		s.info.Reason = ""
	}
	s.mu.Unlock()
	s.pool.workersChanged()
}

// setQueued records the jobs queued in the worker, for holds.
func (s *slot) setQueued(jobs []*Job) {
	s.mu.Lock()
	s.queuedIDs = s.queuedIDs[:0]
	for _, j := range jobs {
		s.queuedIDs = append(s.queuedIDs, j.ID)
	}
	s.info.Queued = len(jobs)
	s.mu.Unlock()
	s.pool.workersChanged()
}

// holds reports whether the slot's worker runs job id or has it queued.
func (s *slot) holds(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info.Job == id || slices.Contains(s.queuedIDs, id)
}

func (s *slot) snapshot() Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.info
	w.Counters = maps.Clone(w.Counters) // the slot's goes on changing
	return w
}
