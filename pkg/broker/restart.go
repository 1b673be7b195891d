package broker

import (
	"math/rand/v2"
	"time"
)

// restartAction is what a slot does once its process has ended unexpectedly.
type restartAction int

const (
	// restartAfterDelay: start a new process once the delay has passed.
	restartAfterDelay restartAction = iota
	// restartGiveUp: the restart budget is spent. Wait the delay (until the
	// budget allows one more restart), then ask the policy again.
	restartGiveUp
)

func (a restartAction) String() string {
	if a == restartGiveUp {
		return "give up for now"
	}
	return "restart"
}

// Defaults of a restartPolicy.
const (
	restartBase   = 100 * time.Millisecond
	restartMax    = 10 * time.Second
	restartStable = 10 * time.Second
	restartJitter = 0.1
	restartWindow = time.Minute
)

// restartPolicy decides when a slot replaces a process that ended on its
// own (a crash, a worker that never said ready, a failed start). It is pure:
// no goroutines and no clock reads; the slot passes in how long the process
// was healthy (from its first ready) and when it ended. It is owned by one
// slot goroutine.
//
// The first restart is immediate, so a crashed worker is replaced at once.
// Each further one waits Base*2^(n-1), capped at Max, with ±Jitter. A
// process that stayed up for Stable, or finished a job, resets the count: it
// proved the command works, so its death is not a crash loop (a job that
// kills every process it reaches is stopped by the job's attempt limit). With Budget > 0, at
// most Budget restarts happen per Window; past it next says restartGiveUp
// with the time until the oldest restart leaves the window.
type restartPolicy struct {
	Base   time.Duration
	Max    time.Duration
	Stable time.Duration
	Jitter float64 // fraction of the delay, 0.1 for ±10%
	Budget int     // restarts per Window; 0: unlimited
	Window time.Duration
	Rand   func() float64 // in [0, 1); math/rand/v2.Float64 if nil

	failures int         // restarts since the last stable run
	recent   []time.Time // restarts within Window, oldest first (only with a Budget)
}

// newRestartPolicy returns the default policy with the given budget per
// minute (0: unlimited).
func newRestartPolicy(budget int) *restartPolicy {
	return &restartPolicy{
		Base:   restartBase,
		Max:    restartMax,
		Stable: restartStable,
		Jitter: restartJitter,
		Budget: budget,
		Window: restartWindow,
	}
}

// next is called when a process that was healthy for uptime (zero if it
// never said ready), and finished a job or not (productive), has ended
// unexpectedly at now. It returns what to do and after how long. A restartGiveUp answer
// records nothing: the slot asks again after the delay.
func (r *restartPolicy) next(uptime time.Duration, productive bool, now time.Time) (restartAction, time.Duration) {
	if uptime >= r.Stable || productive {
		r.failures = 0
	}
	if r.Budget > 0 {
		r.prune(now)
		if len(r.recent) >= r.Budget {
			return restartGiveUp, r.recent[0].Add(r.Window).Sub(now)
		}
		r.recent = append(r.recent, now)
	}
	delay := r.backoff(r.failures)
	r.failures++
	return restartAfterDelay, delay
}

// prune drops the restarts that are no longer within the window ending at now.
func (r *restartPolicy) prune(now time.Time) {
	i := 0
	for i < len(r.recent) && !r.recent[i].After(now.Add(-r.Window)) {
		i++
	}
	r.recent = append(r.recent[:0], r.recent[i:]...)
}

// backoff is the delay before the restart that follows n earlier failures.
func (r *restartPolicy) backoff(n int) time.Duration {
	if n == 0 {
		return 0
	}
	d := r.Max
	if n-1 < 32 && r.Base<<(n-1) > 0 && r.Base<<(n-1) < r.Max {
		d = r.Base << (n - 1)
	}
	rnd := r.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	return time.Duration(float64(d) * (1 + r.Jitter*(2*rnd()-1)))
}
