package broker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/broker"
)

func init() {
	fakeWorkers["long-answer"] = runLongAnswer
	fakeWorkers["prefetch-long"] = runPrefetchLong
}

// longAnswer is a done line for job id over the channel's limit: its result
// is a string of 2,000,000 bytes, written before the id unless idFirst (the
// id is then past the head the reader keeps). With id "", it names no job.
func longAnswer(id string, idFirst bool) string {
	result := `"` + strings.Repeat("r", 2_000_000) + `"`
	switch {
	case id == "":
		return `{"op":"done","result":` + result + `}`
	case idFirst:
		return `{"op":"done","id":"` + id + `","result":` + result + `}`
	default:
		return `{"op":"done","result":` + result + `,"id":"` + id + `"}`
	}
}

// longError is the error of an attempt answered with line.
func longError(line string) string {
	return fmt.Sprintf("worker's line of %d bytes is over the limit of %d bytes (result too large?)", len(line), proto.DefaultMaxLine)
}

// runLongAnswer: ready, then a job whose payload is "long" is answered with
// longAnswer (id first), "long-noid" with longAnswer (id last),
// "long-exit" with longAnswer (id first) and the worker's exit; any other
// is echoed.
func runLongAnswer() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady})
	exit := false
	c.serve(func(m proto.Message) bool {
		var mode string
		_ = json.Unmarshal(m.Payload, &mode)
		switch mode {
		case "long", "long-exit":
			exit = mode == "long-exit"
			writeLine(c, longAnswer(m.ID, true))
			return !exit
		case "long-noid":
			writeLine(c, longAnswer(m.ID, false))
			return true
		}
		return c.echo(m)
	})
	return 0
}

// runPrefetchLong: runPrefetchFIFO, but the job that waits on a FIFO is
// answered with a line over the limit that names no job, after which the
// worker waits to be stopped.
func runPrefetchLong() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Prefetch: 2})
	c.serve(func(m proto.Message) bool {
		var path string
		if json.Unmarshal(m.Payload, &path) == nil {
			if _, err := os.Stat(path); err == nil {
				_, _ = os.ReadFile(path)
				writeLine(c, longAnswer("", false))
				blockForever()
			}
		}
		return c.echo(m)
	})
	return 0
}

func writeLine(c *channel, line string) {
	if _, err := io.WriteString(c.raw, line+"\n"); err != nil {
		fmt.Fprintln(os.Stderr, "fake worker:", err)
		os.Exit(10)
	}
}

// A worker that answers its job with a line over the channel's limit: the
// job's attempt fails at once, saying so, and the worker goes on serving
// (or, if it exited, its replacement does). Before, the job stayed running
// for ever.
func TestPool_LongAnswer(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name, payload string
		line          string // what the worker answers
		violation     bool   // the line names no job: logged as a protocol violation
		exits         bool
	}{
		{name: "IDInHead", payload: `"long"`, line: longAnswer("big", true)},
		{name: "IDPastHead", payload: `"long-noid"`, line: longAnswer("big", false), violation: true},
		{name: "ThenExits", payload: `"long-exit"`, line: longAnswer("big", true), exits: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBundle(t)
			pool := setup(t, b.spec("long-answer"), b)
			first := readyWorkers(t, b, pool)[0]

			b.submit(t, "big", tt.payload)
			e := b.outcome(t)
			require.Equal(t, "big", e.job.ID)
			require.Equal(t, longError(tt.line), e.out.Err)
			require.False(t, e.out.Crashed)
			require.False(t, e.out.Permanent, "a failed attempt, retried per max_attempts")
			require.False(t, e.out.NotStarted)
			require.Equal(t, first.PID, e.out.PID)
			if tt.violation {
				require.NotEmpty(t, b.log.find("level=WARN", "protocol violation", "pid="+fmt.Sprint(first.PID), "holding=1"))
			} else if !tt.exits {
				require.NotEmpty(t, b.log.find("level=WARN", "line over the limit; its attempt fails", "job=big"))
			}

			if tt.exits {
				b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
					return ws[0].Restarts == 1 && ws[0].State == broker.WorkerReady
				}, "the worker that exited is not replaced")
			}
			b.submit(t, "next", `2`)
			e = b.outcome(t)
			require.Equal(t, "next", e.job.ID)
			require.Empty(t, e.out.Err)
			require.Equal(t, "2", string(e.out.Result))
			w := pool.Workers()[0]
			if tt.exits {
				require.NotEqual(t, first.PID, e.out.PID)
				require.Equal(t, 1, w.Restarts)
				return
			}
			require.Equal(t, first.PID, e.out.PID, "the worker goes on")
			require.Zero(t, w.Restarts)
		})
	}
}

// A worker that holds several jobs (one running, two queued) and answers
// with a line over the limit that names none: whose answer it was cannot
// be told, so the worker is stopped; the running job fails with the same
// error, the queued ones go back as never started, and the replacement
// serves the next job.
func TestPool_LongAnswerNamingNoJob(t *testing.T) {
	b := newBundle(t)
	_, pool, fifo := setupPrefetch(t, b, "prefetch-long")
	w := pool.Workers()[0]
	release(t, fifo)

	got := map[string]broker.Outcome{}
	for range 3 {
		e := b.outcome(t)
		got[e.job.ID] = e.out
	}
	require.True(t, strings.HasPrefix(got["j1"].Err, longError(longAnswer("", false))+"; it named no job, and its worker was stopped (worker exited: signal: terminated"), got["j1"].Err)
	for _, id := range []string{"j2", "j3"} {
		require.True(t, got[id].NotStarted, "%s: %+v", id, got[id])
		require.False(t, got[id].Crashed, "%s: %+v", id, got[id])
	}
	require.NotEmpty(t, b.log.find("level=WARN", "protocol violation", "pid="+fmt.Sprint(w.PID), "holding=3"))

	e := b.outcome(t)
	require.Equal(t, "j4", e.job.ID)
	require.Empty(t, e.out.Err)
	require.NotEqual(t, w.PID, e.out.PID)
}
