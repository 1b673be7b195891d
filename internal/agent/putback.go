package agent

import (
	"log/slog"
	"sync"
	"time"
)

// putBackParallel bounds the jobs put back at once.
const putBackParallel = 16

// putter gives back jobs that reached no worker, for any host to take: a
// delivery put back is counted in the job's state as skipped, not as an
// attempt, before its nak. Each put-back runs on a goroutine of its own,
// up to putBackParallel at once (sem), counted in wg: a worker that exits
// with its queue full hands back up to 64 jobs, and the session that waits
// on Done to start its replacement should not wait for them one by one; a
// stopping pool may hand back hundreds held ahead. It has no other state.
type putter struct {
	states *states
	leases *leases
	log    *slog.Logger
	sem    chan struct{}
	wg     sync.WaitGroup
}

func newPutter(states *states, leases *leases, log *slog.Logger) *putter {
	return &putter{states: states, leases: leases, log: log, sem: make(chan struct{}, putBackParallel)}
}

// putBack puts back h's job at once, on a goroutine of its own. what names
// the put-back in a log line if the nak fails.
func (p *putter) putBack(h *heldJob, what string) {
	p.sem <- struct{}{}
	p.wg.Go(func() {
		defer func() { <-p.sem }()
		p.skip(h, 0, what)
	})
}

// wait waits for the put-backs under way.
func (p *putter) wait() { p.wg.Wait() }

// skip puts back h's job for any host to take after delay, on the
// caller's goroutine. The order within a job stays: its skip is recorded
// before it is redelivered.
func (p *putter) skip(h *heldJob, delay time.Duration, what string) {
	if !p.leases.fresh(h.msg) {
		// Its lease may have ended: the job may be another host's now.
		p.leases.release(h.msg)
		p.log.Warn(what+": its lease may have ended while this host was stopped; left to its redelivery", "job", h.state.ID)
		return
	}
	p.states.recordSkip(h)
	p.leases.release(h.msg)
	var err error
	if delay > 0 {
		err = h.msg.NakWithDelay(delay)
	} else {
		err = h.msg.Nak()
	}
	if err != nil {
		p.log.Warn(what+"; it comes back when its lease ends", "job", h.state.ID, "err", err)
	}
}
