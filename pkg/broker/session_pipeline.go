// The jobs queued into a busy worker (its ready op's prefetch): pipeline
// writes the jobs the Source holds already behind the running one, and
// session.queued holds them in order until the worker answers each. It all
// runs on the session's goroutine; the slot shows the queue to Pool.Cancel
// through setQueued (slot.queuedIDs, under slot.mu).

package broker

import (
	"slices"

	"github.com/conductor-run/conductor/internal/flow"
)

// Bounds of the jobs queued into a busy worker.
const (
	// maxPrefetch caps the jobs a worker may hold queued behind its running
	// one (the prefetch of its ready op): a queue refilled once half gone
	// carries 32 jobs a write, and the worker reads as many a wake-up.
	maxPrefetch = 64
	// maxQueuedBytes bounds the job messages queued in a worker, as they
	// are written: no job is queued once they reach it, so they stay under
	// maxQueuedBytes+inlineWrite, and with the running job's (under
	// inlineWrite if it was written inline) inside a pipe's 64 KiB, so
	// writing to a busy worker does not block.
	maxQueuedBytes = 32 << 10
)

// maxQueuedPayload bounds the payload of a job queued behind a running
// one: with its envelope it stays under inlineWrite.
const maxQueuedPayload = inlineWrite - 512

// pipeline queues jobs the Source holds already behind the running one,
// while the worker's jobs are short: up to its prefetch, and no more than it
// runs in about flow.ShortJob, in one write once half the queue is gone. It
// never waits on the Source: a job that has to be fetched goes to an idle
// worker first.
func (ss *session) pipeline() {
	rs, ok := ss.s.pool.src.(ReadySource)
	limit := flow.Queue(ss.prefetch, ss.avgRun.Duration())
	if !ok || limit == 0 {
		return
	}
	// The queue holds what the worker runs in about flow.ShortJob (flow.Queue), within its
	// prefetch, and is refilled once half gone, so that one write and one
	// read carry several jobs.
	queuedBytes := 0
	for _, j := range ss.queued {
		queuedBytes += j.lineSize
	}
	if len(ss.queued) > limit/2 || queuedBytes > maxQueuedBytes/2 {
		return
	}
	room := limit - len(ss.queued)
	if max := ss.spec.MaxJobs; max > 0 {
		room = min(room, max-ss.finished-1-len(ss.queued)) // the worker will not run more
	}
	var lines []byte
	first := len(ss.queued)
	for range room {
		// Only small jobs are queued, and none once the queue holds
		// maxQueuedBytes, so that the write never blocks on a full pipe; a
		// larger one is left for an idle worker.
		if queuedBytes >= maxQueuedBytes {
			break
		}
		j, ok := rs.TryNext(min(maxQueuedPayload, maxQueuedBytes-queuedBytes))
		if !ok {
			break
		}
		before := len(lines)
		var err error
		if lines, err = ss.appendJob(lines, j); err != nil {
			ss.cannotSend(j, err)
			continue
		}
		if j.lineSize = len(lines) - before; j.lineSize >= inlineWrite {
			// A small payload whose message is not (a long id or type,
			// or characters JSON escapes): back to the Source for an
			// idle worker, as never started.
			lines = lines[:before]
			ss.notStarted(j, "too large to queue behind a running job")
			continue
		}
		ss.queued = append(ss.queued, j)
		queuedBytes += j.lineSize
	}
	if len(lines) == 0 {
		return
	}
	ss.setQueue(ss.queued)
	err := ss.p.sendLines(lines, "queued jobs", inlineDeadline)
	if err == nil {
		return
	}
	// The worker, of no use if it does not read, is killed; the jobs of
	// the failed write go back to the Source as never started, whether or
	// not some reached it: a worker starts a queued job only after
	// answering the one before it.
	failed := ss.queued[first:]
	ss.setQueue(ss.queued[:first:first])
	ss.ready = false
	for _, j := range failed {
		ss.notStarted(j, "could not be written to its worker")
	}
	select {
	case <-ss.p.exited:
	default:
		ss.s.log.Warn("cannot give queued jobs to the worker; killing it, the jobs go to other workers",
			"pid", ss.p.pid, "jobs", len(failed), "err", err)
		ss.p.kill()
	}
}

// setQueue makes q the jobs queued in the worker, and shows them.
func (ss *session) setQueue(q []*Job) {
	ss.queued = q
	ss.s.setQueued(q)
}

// queuedAt is the index of job id in queued, or -1.
func (ss *session) queuedAt(id string) int {
	return slices.IndexFunc(ss.queued, func(j *Job) bool { return j.ID == id })
}
