package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRestartPolicy_Next(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		uptime time.Duration
		at     time.Duration // since t0
		action restartAction
		delay  time.Duration
	}
	for _, tc := range []struct {
		name   string
		budget int
		rand   float64
		steps  []step
	}{
		{
			name: "FirstImmediateThenExponential",
			rand: 0.5, // no jitter
			steps: []step{
				{0, 0, restartAfterDelay, 0},
				{0, 1 * time.Second, restartAfterDelay, 100 * time.Millisecond},
				{0, 2 * time.Second, restartAfterDelay, 200 * time.Millisecond},
				{0, 3 * time.Second, restartAfterDelay, 400 * time.Millisecond},
				{time.Second, 4 * time.Second, restartAfterDelay, 800 * time.Millisecond},
			},
		},
		{
			name: "CappedAtMax",
			rand: 0.5,
			steps: func() []step {
				var s []step
				for i := range 12 {
					d := min(restartBase<<max(i-1, 0), restartMax)
					if i == 0 {
						d = 0
					}
					s = append(s, step{0, time.Duration(i) * time.Minute, restartAfterDelay, d})
				}
				s = append(s, step{0, time.Hour, restartAfterDelay, restartMax})
				return s
			}(),
		},
		{
			name: "StableRunResets",
			rand: 0.5,
			steps: []step{
				{0, 0, restartAfterDelay, 0},
				{0, time.Second, restartAfterDelay, 100 * time.Millisecond},
				{restartStable, 20 * time.Second, restartAfterDelay, 0},
				{time.Second, 22 * time.Second, restartAfterDelay, 100 * time.Millisecond},
			},
		},
		{
			name: "JitterLow",
			rand: 0,
			steps: []step{
				{0, 0, restartAfterDelay, 0},
				{0, time.Second, restartAfterDelay, 90 * time.Millisecond},
				{0, 2 * time.Second, restartAfterDelay, 180 * time.Millisecond},
			},
		},
		{
			name: "JitterHigh",
			rand: 0.75,
			steps: []step{
				{0, 0, restartAfterDelay, 0},
				{0, time.Second, restartAfterDelay, 105 * time.Millisecond},
			},
		},
		{
			name:   "BudgetPerMinute",
			budget: 3,
			rand:   0.5,
			steps: []step{
				{0, 0, restartAfterDelay, 0},
				{0, 10 * time.Second, restartAfterDelay, 100 * time.Millisecond},
				{0, 20 * time.Second, restartAfterDelay, 200 * time.Millisecond},
				// The fourth within the minute waits for the first to leave it.
				{0, 30 * time.Second, restartGiveUp, 30 * time.Second},
				{0, 59 * time.Second, restartGiveUp, time.Second},
				// A give-up counted nothing: the backoff goes on from 400ms.
				{0, 60 * time.Second, restartAfterDelay, 400 * time.Millisecond},
				{0, 61 * time.Second, restartGiveUp, 9 * time.Second},
			},
		},
		{
			name:   "BudgetAndStable",
			budget: 1,
			rand:   0.5,
			steps: []step{
				{time.Hour, 0, restartAfterDelay, 0},
				{time.Hour, 30 * time.Second, restartGiveUp, 30 * time.Second},
				{time.Hour, 60 * time.Second, restartAfterDelay, 0},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRestartPolicy(tc.budget)
			r.Rand = func() float64 { return tc.rand }
			for i, s := range tc.steps {
				action, delay := r.next(s.uptime, false, t0.Add(s.at))
				require.Equal(t, s.action, action, "step %d", i)
				require.Equal(t, s.delay, delay, "step %d", i)
			}
		})
	}
}

func TestRestartPolicy_FinishedJobResets(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_000_000, 0)
	r := newRestartPolicy(0)
	r.Rand = func() float64 { return 0.5 }
	for i, s := range []struct {
		productive bool
		delay      time.Duration
	}{
		{false, 0},
		{false, 100 * time.Millisecond},
		{false, 200 * time.Millisecond},
		{true, 0}, // it finished a job: not a crash loop
		{false, 100 * time.Millisecond},
	} {
		action, delay := r.next(time.Millisecond, s.productive, t0.Add(time.Duration(i)*time.Second))
		require.Equal(t, restartAfterDelay, action, "step %d", i)
		require.Equal(t, s.delay, delay, "step %d", i)
	}
}

func TestRestartAction_String(t *testing.T) {
	t.Parallel()
	require.Equal(t, "restart", restartAfterDelay.String())
	require.Equal(t, "give up for now", restartGiveUp.String())
}
