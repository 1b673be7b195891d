package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/conductor-run/conductor/internal/wire"
)

// The decision on an outcome: what an attempt's end makes of its job. These
// are pure functions of their inputs, with no goroutines and no I/O, so that
// every rule is tested from a table (outcome_test.go). A per-job option that
// changes an outcome (a new limit, a new status) is a field of attemptEnd
// and a row of that table.

// attemptEnd is what the decision needs to know of an attempt that ended.
type attemptEnd struct {
	Err         string // the worker's error; empty: it succeeded
	Permanent   bool   // the worker said not to retry
	Crashed     bool   // the worker died holding the job (or was stopped for its timeout)
	Refused     string // why the worker's result cannot be stored (checkResult); empty: it can
	Cancelled   bool   // a user cancelled the job
	Attempt     int    // this attempt's number, from 1
	MaxAttempts int    // the job's limit, or its pool's
}

// maxResultDepth bounds how deeply a stored result nests arrays and
// objects. Deeper ones are refused: strict JSON decoders stop at a few
// hundred levels or fewer, and some tools that indent an answer make it
// grow with the square of its depth.
const maxResultDepth = 64

// checkResult returns a worker's result as it is stored, valid UTF-8 (each
// run of invalid bytes replaced with U+FFFD, so that every answer that
// carries it is valid JSON text), and why it cannot be stored, if it
// cannot: it is over maxSize bytes, or nested deeper than maxResultDepth.
// result is JSON, as the channel protocol's decoder checked.
func checkResult(result json.RawMessage, maxSize int) (json.RawMessage, string) {
	if !utf8.Valid(result) {
		result = bytes.ToValidUTF8(result, []byte("\uFFFD"))
	}
	if len(result) > maxSize {
		return result, fmt.Sprintf("result of %d bytes is over the limit of %d bytes", len(result), maxSize)
	}
	if d := jsonDepth(result); d > maxResultDepth {
		return result, fmt.Sprintf("result nests %d levels deep, over the limit of %d levels", d, maxResultDepth)
	}
	return result, ""
}

// jsonDepth is how deeply data, JSON, nests arrays and objects: 0 for a
// scalar, 1 for [1,2], 2 for [[1]].
func jsonDepth(data []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// verdict is the decision: the job's new status and error, and whether to
// retry it.
type verdict struct {
	Status wire.Status
	Error  string
	// Retry is the delay before the job runs again; < 0: it is not retried
	// (the message is acked).
	Retry time.Duration
}

// decide returns what becomes of a job after an attempt: a success with a
// result that checkResult let through succeeds; an error of a cancelled
// job makes it cancelled; a permanent error (a refused result is one), or
// the last attempt's, makes it dead; any other failure is retried, a crash
// at once (the job did nothing wrong yet), else after backoff(attempt).
// The error is made valid UTF-8, as the result is.
func decide(e attemptEnd, backoff func(attempt int) time.Duration) verdict {
	if e.Err == "" && e.Refused != "" {
		e.Err, e.Permanent = e.Refused, true
	}
	e.Err = strings.ToValidUTF8(e.Err, "\uFFFD")
	switch {
	case e.Err == "":
		return verdict{Status: wire.StatusSucceeded, Retry: -1}
	case e.Cancelled:
		return verdict{Status: wire.StatusCancelled, Error: e.Err, Retry: -1}
	case e.Permanent || e.Attempt >= e.MaxAttempts:
		return verdict{Status: wire.StatusDead, Error: e.Err, Retry: -1}
	case e.Crashed:
		return verdict{Status: wire.StatusFailed, Error: e.Err, Retry: 0}
	}
	return verdict{Status: wire.StatusFailed, Error: e.Err, Retry: backoff(e.Attempt)}
}

// poison reports whether a failed job is a poison job: its worker died
// running it in maxCrashes of its attempts (history, oldest first, the
// last being the attempt that just failed), the last among them. Such a
// job is made dead instead of killing more workers. It returns the crashes
// counted. maxCrashes <= 0: no job is poison.
func poison(status wire.Status, history []wire.Attempt, maxCrashes int) (bool, int) {
	if status != wire.StatusFailed || maxCrashes <= 0 || len(history) == 0 || !history[len(history)-1].Crashed {
		return false, 0
	}
	crashes := 0
	for _, a := range history {
		if a.Crashed {
			crashes++
		}
	}
	return crashes >= maxCrashes, crashes
}

// Backoff is the delay before retrying a job whose attempt failed: 1s,
// doubling per attempt, capped at 5m, with 20% jitter.
func Backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 9)
	d = min(d, 5*time.Minute)
	return d - d/10 + rand.N(d/5+1)
}
