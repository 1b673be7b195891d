package broker

import (
	"math"
	"math/rand/v2"
	"time"
)

// Fixed parts of the restart policy.
const (
	restartJitter = 0.1         // ±10% on every backoff delay
	restartWindow = time.Minute // the window of max_restarts_per_minute

	// failedStartUptime: a process that ended by itself within this of its
	// first ready (its start, for ProtocolNone), having finished no job,
	// failed its start, as one that never said ready did; the crash-loop
	// breaker (Spec.MaxFailedStarts) counts those. One that ran longer is
	// a crash of a working command (a job that kills its workers is for
	// that job's max_crashes), and a worker killed on purpose (timeout,
	// cancel) is neither.
	failedStartUptime = time.Second
)

// backoff decides how long a slot waits before it replaces a process that
// ended on its own (a crash, a worker that never said ready, a failed
// start). It is pure: no goroutines and no clock reads. It is owned by one
// slot goroutine.
//
// The first restart is immediate, so a crashed worker is replaced at once.
// Each further one in a row waits Base*Factor^(n-1), capped at Max, with
// ±Jitter. A process that stayed up for Stable, or finished a job, resets
// the count: it proved the command works, so its death is not a crash loop
// (a job that kills every process it reaches is stopped by the job's
// attempt limit).
type backoff struct {
	Base   time.Duration
	Factor float64
	Max    time.Duration
	Stable time.Duration
	Jitter float64        // fraction of the delay, 0.1 for ±10%
	Rand   func() float64 // in [0, 1); math/rand/v2.Float64 if nil

	failures int // restarts since the last stable run
}

// newBackoff returns the backoff of spec, whose defaults are filled in.
func newBackoff(spec Spec) *backoff {
	return &backoff{
		Base:   spec.RestartDelay,
		Factor: spec.RestartFactor,
		Max:    spec.RestartMaxDelay,
		Stable: spec.RestartReset,
		Jitter: restartJitter,
	}
}

// next is called when a process that was healthy for uptime (zero if it
// never said ready), and finished a job or not (productive), has ended
// unexpectedly. It returns the delay before the restart.
func (b *backoff) next(uptime time.Duration, productive bool) time.Duration {
	if uptime >= b.Stable || productive {
		b.failures = 0
	}
	n := b.failures
	b.failures++
	if n == 0 {
		return 0
	}
	d := float64(b.Max)
	if e := float64(b.Base) * math.Pow(b.Factor, float64(n-1)); e < d {
		d = e
	}
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	return time.Duration(d * (1 + b.Jitter*(2*rnd()-1)))
}

// breaker is a pool's crash-loop breaker: it admits at most Budget
// restarts per Window. It is pure; the pool guards it with its mutex.
type breaker struct {
	Budget int // 0: no limit
	Window time.Duration

	recent []time.Time // admitted restarts within Window, oldest first
}

// admit records a restart at now and returns true, or, when Budget
// restarts happened within the window already, records nothing and returns
// false with the time until the oldest of them leaves the window.
func (b *breaker) admit(now time.Time) (bool, time.Duration) {
	if b.Budget <= 0 {
		return true, 0
	}
	i := 0
	for i < len(b.recent) && !b.recent[i].After(now.Add(-b.Window)) {
		i++
	}
	b.recent = append(b.recent[:0], b.recent[i:]...)
	if len(b.recent) >= b.Budget {
		return false, b.recent[0].Add(b.Window).Sub(now)
	}
	b.recent = append(b.recent, now)
	return true, 0
}
