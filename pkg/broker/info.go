package broker

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// PoolState is where a pool is in its life, as PoolInfo.State reports it.
type PoolState string

// States of a pool.
const (
	PoolNew      PoolState = "new"      // built, not started
	PoolRunning  PoolState = "running"  // started, and at least one worker is up (ready or busy)
	PoolStarting PoolState = "starting" // running, but every worker is still starting: none is ready yet
	PoolBackoff  PoolState = "backoff"  // running, but no worker is up and some slot has no process: it waits to restart
	PoolDraining PoolState = "draining" // Drain called: workers finish their jobs and stop
	PoolDrained  PoolState = "drained"  // no worker runs until Resume
	PoolFailed   PoolState = "failed"   // the crash-loop breaker tripped: restarts paused
	PoolStopping PoolState = "stopping" // Stop or Kill called, processes still running
	PoolStopped  PoolState = "stopped"  // every slot goroutine has returned
)

// Operation is a rolling change of a pool's workers, as PoolInfo.Operation
// reports it.
type Operation string

// Rolling operations.
const (
	OpRecycle Operation = "recycle" // Recycle, or recycling by age, jobs done or memory
	OpUpgrade Operation = "upgrade" // Upgrade or Update, or the rollback of one
)

// PoolInfo describes a pool, as Pool.Info returns it. The JSON names are
// those of the pools in workerd's heartbeat.
type PoolInfo struct {
	// Name is the pool's name (Spec.Name).
	Name string `json:"name"`
	// Count is the number of workers the pool keeps running.
	Count int `json:"count"`
	// Protocol is how the pool talks to its workers.
	Protocol Protocol `json:"protocol"`
	// State is where the pool is in its life.
	State PoolState `json:"state"`
	// Operation is the rolling change in progress, if any.
	Operation Operation `json:"operation,omitempty"`
	// Cmd is the command line new workers start with.
	Cmd []string `json:"cmd,omitempty"`
	// RetryAt is when a failed pool tries to start workers again; zero
	// unless State is PoolFailed.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Error says why the pool failed, or why its last upgrade rolled back.
	Error string `json:"error,omitempty"`
	// Reason says, in one line for people, why the pool is not plainly
	// running: for failed, why the breaker tripped, the last exit and the
	// retry time ("crash loop: 5 failed starts within 10s; last exit 127
	// \"no such file\"; retry at …"); for backoff, starting, or running
	// with fewer workers up than Count, how many are up and the reason of
	// the first slot that is not. Empty when every worker is up.
	Reason string `json:"reason,omitempty"`
}

// WorkerState is where a worker slot is, as Worker.State reports it.
type WorkerState string

// States of a worker slot.
const (
	WorkerStarting  WorkerState = "starting"  // process started, not ready yet
	WorkerReady     WorkerState = "ready"     // idle, waiting for a job (or a service process running)
	WorkerBusy      WorkerState = "busy"      // running a job, or said busy
	WorkerRecycling WorkerState = "recycling" // done its max_jobs: idle until its replacement is ready
	WorkerStopping  WorkerState = "stopping"  // being stopped
	WorkerExited    WorkerState = "exited"    // no process: it ended and the slot stopped, or it is about to restart
	WorkerBackoff   WorkerState = "backoff"   // no process: waiting before a restart
)

// Worker describes one worker process, or the slot of one being restarted,
// as Pool.Workers returns it. The JSON names are those of the workers in
// workerd's heartbeat.
type Worker struct {
	// Host is the pool's Config.Host.
	Host string `json:"host"`
	// Pool is the pool's name (Spec.Name).
	Pool string `json:"pool"`
	// Index is the slot's index, 0 to Count-1. During a recycle or an
	// upgrade a replacement shares the index of the worker it replaces.
	Index int `json:"index"`
	// PID is the process id; zero while the slot has no process.
	PID int `json:"pid"`
	// State is where the slot is.
	State WorkerState `json:"state"`
	// RSS is the resident memory of the process in bytes, read from /proc
	// by Pool.Workers (0 where /proc cannot say).
	RSS int64 `json:"rss"`
	// JobsDone counts the jobs the slot's processes have finished.
	JobsDone int64 `json:"jobs_done"`
	// Counters are what the slot's processes counted with the count op
	// (docs/stats.md), by name.
	Counters map[string]float64 `json:"counters,omitempty"`
	// Restarts counts the processes the slot started after its first.
	Restarts int `json:"restarts"`
	// Job is the id of the job the worker runs, if any.
	Job string `json:"job,omitempty"`
	// Queued counts the jobs queued in the worker behind Job (prefetch).
	Queued int `json:"queued,omitempty"`
	// Started is when the current process started.
	Started time.Time `json:"started,omitzero"`
	// CPU is the user and system CPU time the process has used, read from
	// /proc by Pool.Workers.
	CPU Duration `json:"cpu,omitempty"`
	// Version counts the pool's command lines: 1 for the one it started
	// with, one more per upgrade. It is the one the slot runs.
	Version int `json:"version,omitempty"`
	// LastExit describes how the slot's previous process ended, if any
	// ("exit status 2", "signal: killed").
	LastExit string `json:"last_exit,omitempty"`
	// LastExitAt is when the previous process ended, in UTC.
	LastExitAt time.Time `json:"last_exit_at,omitzero"`
	// Reason says, in one line for people, why the slot is in its state
	// when that is not plainly healthy: for backoff, the last exit, its
	// stderr's last line, the failed starts in a row and the restart time
	// ("exit 127 \"no such file\" x3 in a row; restart at …"); for a
	// restarted worker still starting, the exit it replaces. Empty once
	// the worker is ready.
	Reason string `json:"reason,omitempty"`
}

// Duration is a time.Duration that encodes in JSON as a Go duration
// string ("1.5s"), as the events and heartbeats workerd publishes do.
type Duration time.Duration

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("broker: duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("broker: duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// The pool's views: what Workers and Info report, and the events it emits.

// Workers returns a snapshot of every worker slot, in index order (during a
// recycle or an upgrade, a replacement shares the index of the worker it
// replaces). RSS and CPU are read from /proc now.
func (p *Pool) Workers() []Worker {
	p.mu.Lock()
	slots := slices.Clone(p.slots)
	p.mu.Unlock()
	out := make([]Worker, 0, len(slots))
	for _, s := range slots {
		w := s.snapshot()
		rss, cpu := procStat(w.PID)
		w.RSS, w.CPU = rss, Duration(cpu)
		if rss > 0 {
			s.lastRSS.Store(rss)
		}
		out = append(out, w)
	}
	slices.SortStableFunc(out, func(a, b Worker) int { return a.Index - b.Index })
	return out
}

// Info describes the pool.
func (p *Pool) Info() PoolInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := PoolInfo{
		Name:      p.spec.Name,
		Count:     p.count,
		Protocol:  p.spec.Protocol,
		State:     p.state,
		Operation: p.operation,
		Cmd:       slices.Clone(p.spec.Cmd),
		Error:     p.lastErr,
	}
	if p.gen != nil {
		info.Cmd = slices.Clone(p.gen.spec.Cmd)
	}
	switch p.state {
	case PoolFailed:
		info.RetryAt, info.Reason = p.retryAt, p.failReason
	case PoolRunning:
		info.State, info.Reason = p.health()
	}
	return info
}

// health says how a running pool's current workers are: PoolRunning if
// any is up (with a reason if fewer than Count are), else PoolBackoff if
// some slot has no process, else PoolStarting. p.mu is held (then each
// slot's mu: the lock order).
func (p *Pool) health() (PoolState, string) {
	up, idle := 0, false
	var first *Worker // the first current worker that is not up
	var ws []Worker
	for _, s := range p.slots {
		if s.ctx.Err() == nil {
			ws = append(ws, s.snapshot())
		}
	}
	slices.SortStableFunc(ws, func(a, b Worker) int { return a.Index - b.Index })
	for i := range ws {
		switch ws[i].State {
		case WorkerReady, WorkerBusy, WorkerRecycling:
			up++
			continue
		case WorkerBackoff, WorkerExited:
			idle = true
		}
		if first == nil {
			first = &ws[i]
		}
	}
	if up >= p.count || first == nil {
		return PoolRunning, ""
	}
	why := fmt.Sprintf("%d of %d workers up; worker %d %s", up, p.count, first.Index, first.State)
	if first.Reason != "" {
		why += ": " + first.Reason
	}
	switch {
	case up > 0:
		return PoolRunning, why
	case idle:
		return PoolBackoff, why
	}
	return PoolStarting, why
}

// workersChanged fires the test signal of that name.
func (p *Pool) workersChanged() {
	if f := p.test.workersChanged; f != nil {
		f()
	}
}

// emit completes e and hands it to OnEvent.
func (p *Pool) emit(e Event) {
	if p.onEvent == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.Host, e.Pool = p.host, p.spec.Name
	p.onEvent(e)
}
