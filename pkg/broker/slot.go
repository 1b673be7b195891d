package broker

import (
	"log/slog"
	"sync"
	"time"

	"github.com/conductor-run/conductor/internal/wire"
)

// States of a worker slot, as WorkerInfo.State reports them.
const (
	WorkerStarting = "starting" // process started, not ready yet
	WorkerReady    = "ready"    // idle, waiting for a job (or a service process running)
	WorkerBusy     = "busy"     // running a job, or said busy
	WorkerStopping = "stopping" // the pool is stopping it
	WorkerExited   = "exited"   // no process: it ended and the pool stopped, or it is about to restart
	WorkerBackoff  = "backoff"  // no process: waiting before a restart
)

// slot is one worker position of a pool: a goroutine that starts a process,
// serves it until it exits, and decides whether and when to start the next
// (start -> wait -> decide -> delay).
//
// Ownership: cfg is set by Pool.Start before the goroutine starts and is
// read-only after; policy, carry and starts belong to the slot goroutine;
// info is written by the slot goroutine and read by Pool.Workers, both under
// mu. Lock order: Pool.mu before slot.mu.
type slot struct {
	pool  *Pool
	index int
	log   *slog.Logger // pool's, with index
	cfg   procConfig

	policy *restartPolicy
	// carry is a job taken from the Source that no process has received
	// (the write to fd 3 failed, or Next returned after the worker became
	// unavailable). It goes to the next ready process of this slot.
	carry  *Job
	starts int // processes started

	mu   sync.Mutex
	info wire.WorkerInfo // guarded by mu
}

func newSlot(p *Pool, index int) *slot {
	return &slot{
		pool:   p,
		index:  index,
		log:    p.log.With("index", index),
		policy: newRestartPolicy(p.spec.RestartsPerMinute),
		info: wire.WorkerInfo{
			Host:  p.host,
			Pool:  p.spec.Name,
			Index: index,
			State: WorkerStarting,
		},
	}
}

// run is the slot goroutine: start -> wait -> decide -> delay, until the
// pool stops.
func (s *slot) run(sp *spawner) {
	defer s.finish()
	for s.pool.intake.Err() == nil {
		run := s.runProcess(sp) // start, wait
		if s.pool.intake.Err() != nil {
			return // a deliberate stop, not a crash: no restart
		}
		if !s.backoff(run) { // decide, delay
			return
		}
	}
}

// processRun is what the restart policy needs to know of a process that
// ended: when it first said ready (its start for ProtocolNone; zero if
// never) and how many jobs it finished.
type processRun struct {
	readyAt  time.Time
	finished int
}

// runProcess starts one process and serves it until it has exited and been
// released.
func (s *slot) runProcess(sp *spawner) processRun {
	p, err := startProc(sp, s.cfg)
	if err != nil {
		s.log.Error("cannot start worker", "err", err)
		return processRun{}
	}
	s.starts++
	s.update(func(w *wire.WorkerInfo) {
		w.PID, w.Started, w.State, w.Job = p.pid, p.started, WorkerStarting, ""
		if s.starts > 1 {
			w.Restarts++
		}
	})
	s.log.Info("worker started", "pid", p.pid)
	run := processRun{readyAt: p.started}
	if s.cfg.channel {
		run = newSession(s, p).run()
	} else {
		s.serveService(p)
	}
	s.update(func(w *wire.WorkerInfo) { w.PID, w.State, w.Job = 0, WorkerExited, "" })
	uptime := time.Since(p.started).Round(time.Millisecond)
	if s.pool.intake.Err() != nil {
		s.log.Info("worker exited", "pid", p.pid, "exit", p.exit)
	} else {
		s.log.Warn("worker exited unexpectedly", "pid", p.pid, "exit", p.exit, "uptime", uptime)
	}
	return run
}

// serveService runs a ProtocolNone process: it is ready once started and
// only watched until it exits or the pool stops.
func (s *slot) serveService(p *proc) {
	s.setState(WorkerReady)
	stop, kill := s.pool.intake.Done(), s.pool.killing
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

// backoff asks the restart policy what to do after a process that ended,
// and waits accordingly. It returns false if the pool stopped meanwhile.
func (s *slot) backoff(run processRun) bool {
	var healthy time.Duration
	if !run.readyAt.IsZero() {
		healthy = time.Since(run.readyAt)
	}
	for {
		action, delay := s.policy.next(healthy, run.finished > 0, time.Now())
		if action == restartGiveUp {
			s.log.Error("worker keeps failing; not restarting it for now",
				"restarts_per_minute", s.pool.spec.RestartsPerMinute, "retry_in", delay.Round(time.Millisecond))
			s.giveBack("worker keeps failing; restarts paused")
		}
		if delay > 0 {
			// Do not keep a job through a backoff: another worker may be free.
			s.giveBack("worker restarting")
			s.setState(WorkerBackoff)
			if !s.sleep(delay) {
				return false
			}
		}
		if action == restartAfterDelay {
			return true
		}
	}
}

// sleep waits d, or until the pool stops (then it returns false).
func (s *slot) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.pool.intake.Done():
		return false
	}
}

// giveBack reports the carried job, if any, as not started with reason, so that
// the Source can hand it to another worker.
func (s *slot) giveBack(reason string) {
	if s.carry == nil {
		return
	}
	j := s.carry
	s.carry = nil
	s.pool.src.Done(j, Outcome{NotStarted: true, Err: reason, Index: s.index})
}

// finish ends the slot goroutine.
func (s *slot) finish() {
	s.giveBack("pool stopped before the job started")
	s.update(func(w *wire.WorkerInfo) { w.PID, w.State, w.Job = 0, WorkerExited, "" })
}

func (s *slot) setState(state string) {
	s.update(func(w *wire.WorkerInfo) { w.State = state })
}

// update changes info; only the slot goroutine (and Pool.beginStop before
// the slot starts) calls it.
func (s *slot) update(f func(*wire.WorkerInfo)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.info)
}

func (s *slot) snapshot() wire.WorkerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}
