package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff_Next(t *testing.T) {
	t.Parallel()
	spec := Spec{}.withDefaults()
	type step struct {
		uptime     time.Duration
		productive bool
		delay      time.Duration
	}
	for _, tc := range []struct {
		name   string
		factor float64
		rand   float64
		steps  []step
	}{
		{
			name: "FirstImmediateThenExponential",
			rand: 0.5, // no jitter
			steps: []step{
				{0, false, 0},
				{0, false, 100 * time.Millisecond},
				{0, false, 200 * time.Millisecond},
				{0, false, 400 * time.Millisecond},
				{time.Second, false, 800 * time.Millisecond},
			},
		},
		{
			name:   "Factor3",
			factor: 3,
			rand:   0.5,
			steps: []step{
				{0, false, 0},
				{0, false, 100 * time.Millisecond},
				{0, false, 300 * time.Millisecond},
				{0, false, 900 * time.Millisecond},
			},
		},
		{
			name: "CappedAtMax",
			rand: 0.5,
			steps: func() []step {
				s := []step{{0, false, 0}}
				for i := range 40 {
					s = append(s, step{0, false, min(spec.RestartDelay<<min(i, 20), spec.RestartMaxDelay)})
				}
				return s
			}(),
		},
		{
			name: "StableRunResets",
			rand: 0.5,
			steps: []step{
				{0, false, 0},
				{0, false, 100 * time.Millisecond},
				{spec.RestartReset, false, 0},
				{time.Second, false, 100 * time.Millisecond},
			},
		},
		{
			name: "FinishedJobResets",
			rand: 0.5,
			steps: []step{
				{0, false, 0},
				{0, false, 100 * time.Millisecond},
				{0, false, 200 * time.Millisecond},
				{time.Millisecond, true, 0}, // it finished a job: not a crash loop
				{0, false, 100 * time.Millisecond},
			},
		},
		{
			name: "JitterLow",
			rand: 0,
			steps: []step{
				{0, false, 0},
				{0, false, 90 * time.Millisecond},
				{0, false, 180 * time.Millisecond},
			},
		},
		{
			name: "JitterHigh",
			rand: 0.75,
			steps: []step{
				{0, false, 0},
				{0, false, 105 * time.Millisecond},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := spec
			if tc.factor != 0 {
				s.RestartFactor = tc.factor
			}
			b := newBackoff(s)
			b.Rand = func() float64 { return tc.rand }
			for i, st := range tc.steps {
				require.Equal(t, st.delay, b.next(st.uptime, st.productive), "step %d", i)
			}
		})
	}
}

func TestBreaker_Admit(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at   time.Duration // since t0
		ok   bool
		wait time.Duration
	}
	for _, tc := range []struct {
		name   string
		budget int
		steps  []step
	}{
		{"Unlimited", 0, []step{{0, true, 0}, {0, true, 0}, {0, true, 0}}},
		{"ThreePerMinute", 3, []step{
			{0, true, 0},
			{10 * time.Second, true, 0},
			{20 * time.Second, true, 0},
			// The fourth within the minute waits for the first to leave it.
			{30 * time.Second, false, 30 * time.Second},
			{59 * time.Second, false, time.Second},
			{60 * time.Second, true, 0},
			{61 * time.Second, false, 9 * time.Second},
		}},
		{"One", 1, []step{
			{0, true, 0},
			{30 * time.Second, false, 30 * time.Second},
			{60 * time.Second, true, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := &breaker{Budget: tc.budget, Window: restartWindow}
			for i, s := range tc.steps {
				ok, wait := b.admit(t0.Add(s.at))
				require.Equal(t, s.ok, ok, "step %d", i)
				require.Equal(t, s.wait, wait, "step %d", i)
			}
		})
	}
}
