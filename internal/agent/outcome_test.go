package agent

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	backoff := func(attempt int) time.Duration { return time.Duration(attempt) * time.Second }
	base := attemptEnd{Attempt: 1, MaxAttempts: 3, MaxResult: 100}
	with := func(f func(*attemptEnd)) attemptEnd { e := base; f(&e); return e }
	for _, tc := range []struct {
		name string
		end  attemptEnd
		want verdict
	}{
		{"success", base, verdict{Status: wire.StatusSucceeded, Retry: -1}},
		{"success at the result limit", with(func(e *attemptEnd) { e.ResultSize = 100 }),
			verdict{Status: wire.StatusSucceeded, Retry: -1}},
		{"result over the limit is permanent", with(func(e *attemptEnd) { e.ResultSize = 101 }),
			verdict{Status: wire.StatusDead, Error: "result of 101 bytes is over the limit of 100 bytes", Retry: -1}},
		{"failure retried after backoff", with(func(e *attemptEnd) { e.Err = "boom"; e.Attempt = 2 }),
			verdict{Status: wire.StatusFailed, Error: "boom", Retry: 2 * time.Second}},
		{"crash retried at once", with(func(e *attemptEnd) { e.Err = "died"; e.Crashed = true }),
			verdict{Status: wire.StatusFailed, Error: "died", Retry: 0}},
		{"last attempt is dead", with(func(e *attemptEnd) { e.Err = "boom"; e.Attempt = 3 }),
			verdict{Status: wire.StatusDead, Error: "boom", Retry: -1}},
		{"past the last attempt is dead", with(func(e *attemptEnd) { e.Err = "boom"; e.Attempt = 9 }),
			verdict{Status: wire.StatusDead, Error: "boom", Retry: -1}},
		{"crash on the last attempt is dead", with(func(e *attemptEnd) { e.Err = "died"; e.Crashed = true; e.Attempt = 3 }),
			verdict{Status: wire.StatusDead, Error: "died", Retry: -1}},
		{"permanent error is dead", with(func(e *attemptEnd) { e.Err = "bad input"; e.Permanent = true }),
			verdict{Status: wire.StatusDead, Error: "bad input", Retry: -1}},
		{"cancelled", with(func(e *attemptEnd) { e.Err = "cancelled"; e.Cancelled = true }),
			verdict{Status: wire.StatusCancelled, Error: "cancelled", Retry: -1}},
		{"cancelled wins over permanent", with(func(e *attemptEnd) { e.Err = "x"; e.Cancelled = true; e.Permanent = true }),
			verdict{Status: wire.StatusCancelled, Error: "x", Retry: -1}},
		{"a success of a cancelled job stands", with(func(e *attemptEnd) { e.Cancelled = true }),
			verdict{Status: wire.StatusSucceeded, Retry: -1}},
		{"a cancelled job's oversized result", with(func(e *attemptEnd) { e.Cancelled = true; e.ResultSize = 101 }),
			verdict{Status: wire.StatusCancelled, Error: "result of 101 bytes is over the limit of 100 bytes", Retry: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, decide(tc.end, backoff))
		})
	}
}

func TestPoison(t *testing.T) {
	t.Parallel()
	crash, ok := wire.Attempt{Crashed: true}, wire.Attempt{}
	for _, tc := range []struct {
		name       string
		status     wire.Status
		history    []wire.Attempt
		maxCrashes int
		poison     bool
		crashes    int
	}{
		{"crashes reach the limit", wire.StatusFailed, []wire.Attempt{crash, ok, crash}, 2, true, 2},
		{"under the limit", wire.StatusFailed, []wire.Attempt{ok, crash}, 2, false, 1},
		{"last attempt did not crash", wire.StatusFailed, []wire.Attempt{crash, crash, ok}, 2, false, 0},
		{"no limit", wire.StatusFailed, []wire.Attempt{crash, crash, crash}, 0, false, 0},
		{"dead already", wire.StatusDead, []wire.Attempt{crash, crash}, 2, false, 0},
		{"succeeded", wire.StatusSucceeded, []wire.Attempt{crash, crash}, 2, false, 0},
		{"no history", wire.StatusFailed, nil, 1, false, 0},
		{"one crash, limit one", wire.StatusFailed, []wire.Attempt{crash}, 1, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, n := poison(tc.status, tc.history, tc.maxCrashes)
			require.Equal(t, tc.poison, p)
			require.Equal(t, tc.crashes, n)
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		attempt int
		base    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {9, 256 * time.Second}, {10, 5 * time.Minute}, {50, 5 * time.Minute}} {
		for range 20 {
			d := Backoff(tc.attempt)
			require.GreaterOrEqual(t, d, tc.base-tc.base/10, "attempt %d", tc.attempt)
			require.LessOrEqual(t, d, tc.base+tc.base/10, "attempt %d", tc.attempt)
		}
	}
}
