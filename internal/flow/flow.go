// Package flow is the arithmetic of conductor's flow control, in one place:
// the moving averages that judge how long a pool's jobs run and how large
// they are, and from them how many jobs a host holds ahead of its workers
// (the job source's prefetch) and how many it queues into one busy worker
// (the channel's prefetch). It holds no goroutines and no locks; its callers
// own the values.
package flow

import "time"

// ShortJob is the average attempt under which jobs are held ahead: a job
// buffered behind jobs this short waits little, and the round trip saved
// per job is worth more than the job itself. Over it, nothing is held, so
// that a long job never waits on a busy host while another host is idle.
const ShortJob = 20 * time.Millisecond

// HoldFor bounds how long the jobs a pool holds ahead keep its workers
// busy: a job held by one host waits about this long at most while another
// host may be idle.
const HoldFor = 100 * time.Millisecond

// HoldBytes is the default bound on the payloads a pool holds ahead, by
// their average size.
const HoldBytes = 8 << 20

// MaxHeldAhead bounds the jobs a pool holds ahead, whatever its size: well
// within a consumer's MaxAckPending (100,000).
const MaxHeldAhead = 8 << 10

// Average is a moving average that weighs each new value 1/8: it follows a
// change within a few values. Its zero value has seen none.
type Average struct{ v int64 }

// Add folds x into the average. The average is never below 1 once a value
// is added, so that a known average is never zero.
func (a *Average) Add(x int64) {
	if a.v == 0 {
		a.v = max(x, 1)
		return
	}
	a.v = max(a.v+(x-a.v)/8, 1)
}

// Value is the average; 0 until a value is added.
func (a Average) Value() int64 { return a.v }

// Duration is the average as a duration.
func (a Average) Duration() time.Duration { return time.Duration(a.v) }

// Short reports whether avg, a known average attempt, is under ShortJob.
func Short(avg time.Duration) bool { return avg > 0 && avg < ShortJob }

// Ahead is how many jobs a pool of workers holds beyond its waiting
// workers, given its average attempt (avgRun, 0: unknown) and payload size
// (avgSize, 0: unknown): none until its jobs are known to be short; then as
// many as its workers run in HoldFor, within perWorker each, MaxHeldAhead
// in all, and holdBytes of payloads.
func Ahead(workers, perWorker int, avgRun time.Duration, avgSize, holdBytes int) int {
	if !Short(avgRun) {
		return 0
	}
	n := min(perWorker*workers, MaxHeldAhead)
	n = min(n, int(int64(workers)*int64(HoldFor)/int64(avgRun)))
	if avgSize > 0 {
		n = min(n, holdBytes/avgSize)
	}
	return n
}

// Queue is how many jobs a busy worker that asked for up to prefetch may
// hold queued behind its running one, given its average attempt (0:
// unknown): what it runs in about ShortJob, at least one, none while its
// jobs are not known to be short.
func Queue(prefetch int, avgRun time.Duration) int {
	if !Short(avgRun) {
		return 0
	}
	return min(prefetch, max(int(ShortJob/avgRun), 1))
}
