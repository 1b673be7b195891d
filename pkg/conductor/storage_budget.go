package conductor

import (
	"context"
	"math"

	"github.com/conductor-run/conductor/internal/wire"
)

// The job stream's budget: how many jobs, and how many bytes of them, the
// storage guard lets into the job stream so that draining what it holds
// still fits on the disk (docs/reliability.md, "A full disk").
//
// A job queued costs the disk more than its message. Its submitter writes
// its queued state first; and as it ends, its final state is written
// three times: to the state bucket (kept ArchiveAfter), into the ends
// stream (until conductord takes it) and into the archive (kept for the
// retention); with the record headers of each, the tombstone its ack
// leaves in the job stream, and the earlier revisions of its state, which
// stay in the bucket's blocks until they are compacted. None of it is
// given back while the queue drains: a job's message frees its room only
// once its whole block of the stream is acked, and its final states stay.
// So the guard admits new jobs only while
//
//	free − reserve − queued·perJob ≥ new bytes + new jobs·perJob
//
// where perJob (jobCost) is the estimated cost of one job outside the job
// stream. What a job's drain writes does not grow with its payload (a
// final state holds its result, and only a dead job's holds its payload),
// so the cost is counted per job, not per byte queued: a budget in bytes
// would let in ten times too many jobs of a few bytes. The job stream can
// bound both its messages and its bytes (MaxMsgs, MaxBytes, DiscardNew);
// the budget is split between them (split), so that whatever the jobs'
// sizes, filling both limits costs no more than the room.

// jobLimits are the job stream's MaxMsgs and MaxBytes; 0 or less: none.
type jobLimits struct{ msgs, bytes int64 }

// jobBudget is what one check of the storage guard read: a pure value,
// whose methods decide the job stream's limits.
type jobBudget struct {
	free    int64 // bytes free on the data directory, the ballast's included
	reserve int64 // kept free besides the drain
	msgs    int64 // jobs in the job stream
	bytes   int64 // their bytes
	perJob  int64 // jobCost.perJob: bytes one job writes outside the job stream
	maxMsg  int64 // the job stream's largest message
	step    int64 // the limits are set again when they are this far from the budget
}

// priorJobBytes is the size of a job message assumed while the job stream
// is empty: it only splits the room between the two limits.
const priorJobBytes = 512

// room is what is left for new jobs, their messages and their drain: what
// is free beyond the reserve and the drain of the jobs queued. It is
// negative when the queued jobs' drain is short of room already.
func (b jobBudget) room() int64 { return b.free - b.reserve - b.msgs*b.perJob }

// meanJob is the mean size of a job message queued.
func (b jobBudget) meanJob() int64 {
	if b.msgs > 0 {
		return max(b.bytes/b.msgs, 1)
	}
	return priorJobBytes
}

// split shares room between new jobs and their bytes: with jobs of the
// mean size queued, both limits are reached together, at a cost of room;
// smaller jobs reach the count first, larger ones the bytes, at a cost of
// less. The bytes let at least one of the largest jobs in, when a quarter
// of the room holds it, so that an idle conductor on a small disk does not
// refuse a large job for the sake of the small ones; the count is made
// smaller to pay for it.
func (b jobBudget) split(room int64) (jobs, bytes int64) {
	if room <= 0 || b.perJob <= 0 {
		return 0, 0
	}
	mean := b.meanJob()
	jobs = room / (mean + b.perJob)
	bytes = jobs * mean
	if large := min(b.maxMsg, room/4); bytes < large {
		bytes = large
		jobs = (room - bytes) / b.perJob
	}
	return jobs, bytes
}

// target is the limits the budget allows now. Closed, they hold the jobs
// queued and no more: a DiscardNew limit below what a stream holds
// refuses new messages and removes none; 0 means none, so the least is 1.
func (b jobBudget) target() jobLimits {
	jobs, bytes := b.split(b.room())
	return jobLimits{msgs: max(b.msgs+jobs, 1), bytes: max(b.bytes+bytes, 1)}
}

// cost is the most that the jobs lim still lets in can write: their bytes
// and a drain each; 0 if it lets none in (a byte is no job).
func (b jobBudget) cost(lim jobLimits) int64 {
	if lim.msgs <= 0 || lim.bytes <= 0 {
		return math.MaxInt64
	}
	jobs, bytes := lim.msgs-b.msgs, lim.bytes-b.bytes
	if jobs <= 0 || bytes <= 1 {
		return 0
	}
	return bytes + jobs*b.perJob
}

// limits returns the limits to set in place of cur, and whether they are
// to be set: when what cur lets in is more than step away from the room,
// so that a queue filling or draining does not update the stream at every
// check (what cur lets in may so exceed the room by up to step, which the
// reserve covers); when the jobs' sizes changed so that the room is split
// badly (widens); and at once, closing the stream, when less than the
// reserve is free and cur lets any job in.
func (b jobBudget) limits(cur jobLimits) (jobLimits, bool) {
	room, held := b.room(), b.cost(cur)
	set := held == math.MaxInt64 || // no limits yet
		(held > 0 && held > room+b.step) || room-held > b.step ||
		(b.free < b.reserve && held > 0) ||
		(room > b.step && b.widens(cur))
	if !set {
		return cur, false
	}
	return b.target(), true
}

// widens reports whether the target lets in more than twice as many jobs,
// or bytes, as cur does, by more than step: the jobs queued are smaller,
// or larger, than those cur was split for, and would be refused by one of
// its limits with room left. Filling and draining the queue with jobs of
// one size never widens it: the target's room shrinks as fast as cur's.
func (b jobBudget) widens(cur jobLimits) bool {
	want := b.target()
	jobs, bytes := max(cur.msgs-b.msgs, 0), max(cur.bytes-b.bytes, 0)
	wantJobs, wantBytes := want.msgs-b.msgs, want.bytes-b.bytes
	return (wantJobs > 2*jobs && (wantJobs-jobs)*b.perJob > b.step) ||
		(wantBytes > 2*bytes && wantBytes-bytes > b.step)
}

// refuses reports whether lim refuses a job of the mean size now: new
// jobs are being refused (StorageFull).
func (b jobBudget) refuses(lim jobLimits) bool {
	if lim.msgs <= 0 || lim.bytes <= 0 {
		return false
	}
	return lim.msgs-b.msgs < 1 || lim.bytes-b.bytes < b.meanJob()
}

// jobCost estimates what one job writes outside the job stream, from the
// final states conductord takes from the job ends. It is the guard's
// goroutine's.
type jobCost struct {
	state float64 // the mean length of a final state, estimated
}

// The cost model: stateCopies copies of a final state, one each in the
// state bucket, the ends stream and the archive (the ends stream's copy is
// given back once its block is acked, which pays for the earlier revisions
// of the state, left in the bucket's blocks until they are compacted), and
// costOverhead for the queued state, the records' headers and subjects,
// and the ack's tombstone. Measured on tmpfs
// (TestConductor_StorageFullDrains): a job of a few bytes whose final
// state is about 400 bytes long writes 335 bytes of queued state and
// about 875 bytes as it drains, 1.2 KiB in all; the model counts 2.2 KiB. Until a job has ended the state is assumed
// priorStateBytes long (4 KiB a job), a guess on the safe side for jobs
// whose results are small; the estimate then follows the states seen,
// rising within about riseWindow jobs of larger states and falling within
// about fallWindow jobs of smaller ones.
const (
	stateCopies     = 3
	costOverhead    = 1 << 10
	priorStateBytes = 1 << 10
	minStateBytes   = 128
	riseWindow      = 100
	fallWindow      = 1000
)

func newJobCost() jobCost { return jobCost{state: priorStateBytes} }

// observe takes n final states of bytes in all.
func (c *jobCost) observe(n, bytes uint64) {
	if n == 0 {
		return
	}
	mean := float64(bytes) / float64(n)
	window := float64(fallWindow)
	if mean > c.state {
		window = riseWindow
	}
	c.state += (1 - math.Exp(-float64(n)/window)) * (mean - c.state)
}

// perJob is the estimated bytes one job writes outside the job stream.
func (c *jobCost) perJob() int64 {
	return stateCopies*int64(max(c.state, minStateBytes)) + costOverhead
}

// noteEnds counts the final states of ends, which conductord has taken,
// for the estimate of what a job's drain writes.
func (g *storageGuard) noteEnds(ends wire.Ends) {
	var n, bytes uint64
	for _, e := range ends.Jobs {
		if e.Status.Final() && len(e.State) > 0 && !e.Archived {
			n++
			bytes += uint64(len(e.State))
		}
	}
	g.mu.Lock()
	g.endStates += n
	g.endBytes += bytes
	g.mu.Unlock()
}

// observeEnds passes the final states taken since the last check to the
// cost estimate.
func (g *storageGuard) observeEnds() {
	g.mu.Lock()
	n, bytes := g.endStates, g.endBytes
	g.mu.Unlock()
	g.cost.observe(n-g.seen[0], bytes-g.seen[1])
	g.seen = [2]uint64{n, bytes}
}

// limitJobs reads the job stream and sets its limits as the budget says
// (jobBudget.limits). It returns the budget and the limits in force.
func (g *storageGuard) limitJobs(ctx context.Context, free, reserve uint64) (jobBudget, jobLimits, error) {
	cfg := g.jobs(jobLimits{})
	stream, err := g.js.Stream(ctx, cfg.Name)
	if err != nil {
		return jobBudget{}, jobLimits{}, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return jobBudget{}, jobLimits{}, err
	}
	b := jobBudget{
		free: int64(free) + g.ballast.held, reserve: int64(reserve),
		msgs: int64(info.State.Msgs), bytes: int64(info.State.Bytes),
		perJob: g.cost.perJob(), maxMsg: int64(cfg.MaxMsgSize), step: int64(reserve / 4),
	}
	lim := jobLimits{msgs: info.Config.MaxMsgs, bytes: info.Config.MaxBytes}
	if want, set := b.limits(lim); set {
		if _, err := g.js.UpdateStream(ctx, g.jobs(want)); err != nil {
			return b, lim, err
		}
		lim = want
	}
	return b, lim, nil
}
