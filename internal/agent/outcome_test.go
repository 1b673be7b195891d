package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	backoff := func(attempt int) time.Duration { return time.Duration(attempt) * time.Second }
	base := attemptEnd{Attempt: 1, MaxAttempts: 3}
	with := func(f func(*attemptEnd)) attemptEnd { e := base; f(&e); return e }
	for _, tc := range []struct {
		name string
		end  attemptEnd
		want verdict
	}{
		{"success", base, verdict{Status: wire.StatusSucceeded, Retry: -1}},
		{"refused result is permanent", with(func(e *attemptEnd) { e.Refused = "result of 101 bytes is over the limit of 100 bytes" }),
			verdict{Status: wire.StatusDead, Error: "result of 101 bytes is over the limit of 100 bytes", Retry: -1}},
		{"an error is stored valid UTF-8", with(func(e *attemptEnd) { e.Err = "bad \xff\xfe byte"; e.Attempt = 3 }),
			verdict{Status: wire.StatusDead, Error: "bad \uFFFD byte", Retry: -1}},
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
		{"a cancelled job's oversized result", with(func(e *attemptEnd) {
			e.Cancelled = true
			e.Refused = "result of 101 bytes is over the limit of 100 bytes"
		}),
			verdict{Status: wire.StatusCancelled, Error: "result of 101 bytes is over the limit of 100 bytes", Retry: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, decide(tc.end, backoff))
		})
	}
}

// TestCheckResult: a result is stored valid UTF-8, within the size and
// nesting limits, or refused with an error that says which limit.
func TestCheckResult(t *testing.T) {
	t.Parallel()
	nested := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name, result string
		maxSize      int
		stored       string
		refused      string
	}{
		{"scalar", `49`, 100, `49`, ""},
		{"none", ``, 100, ``, ""},
		{"at the size limit", `"` + strings.Repeat("x", 98) + `"`, 100, `"` + strings.Repeat("x", 98) + `"`, ""},
		{"over the size limit", `"` + strings.Repeat("x", 99) + `"`, 100, `"` + strings.Repeat("x", 99) + `"`,
			"result of 101 bytes is over the limit of 100 bytes"},
		{"at the depth limit", nested(maxResultDepth), 1 << 20, nested(maxResultDepth), ""},
		{"over the depth limit", nested(maxResultDepth + 1), 1 << 20, nested(maxResultDepth + 1),
			"result nests 65 levels deep, over the limit of 64 levels"},
		{"the 18 KB result that was a 162 MB answer", nested(9000), 1 << 20, nested(9000),
			"result nests 9000 levels deep, over the limit of 64 levels"},
		{"brackets in strings do not nest", `{"a":"[[[[\"{{{{"}`, 100, `{"a":"[[[[\"{{{{"}`, ""},
		{"objects nest", `{"a":{"b":[{}]}}`, 100, `{"a":{"b":[{}]}}`, ""},
		{"invalid UTF-8 is replaced", "[\"a\xffb\xc3\",\"\xe2\x82\"]", 100, "[\"a\uFFFDb\uFFFD\",\"\uFFFD\"]", ""},
		{"the replacement counts in the size", "\"\xff\xfe\"", 4, "\"\uFFFD\"",
			"result of 5 bytes is over the limit of 4 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored, refused := checkResult(json.RawMessage(tc.result), tc.maxSize)
			require.Equal(t, tc.stored, string(stored))
			require.Equal(t, tc.refused, refused)
			if tc.result != "" {
				require.True(t, utf8.Valid(stored))
				require.True(t, json.Valid(stored), "%q", stored)
			}
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
