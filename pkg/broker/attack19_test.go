package broker_test

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/broker"
)

// Review 19: attacks on framed payloads through the broker.

func init() {
	fakeWorkers["a19-framed-flip"] = func() int { return runA19Flip(true) }
	fakeWorkers["a19-line-flip"] = func() int { return runA19Flip(false) }
	fakeWorkers["a19-framed-wedged"] = runA19FramedWedged
	fakeWorkers["a19-framed-liar"] = runA19FramedLiar
}

// runA19Flip: ready, framed or not; at its first job it says busy, answers
// it, then ready again the other way; each job's result is its payload's
// bytes as a JSON string.
func runA19Flip(framed bool) int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Framed: framed})
	first := true
	c.serve(func(m proto.Message) bool {
		if first {
			c.send(proto.Message{Op: proto.OpBusy})
		}
		result, _ := json.Marshal(string(m.Payload))
		c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: result})
		if first {
			first = false
			c.send(proto.Message{Op: proto.OpReady, Framed: !framed})
		}
		return true
	})
	return 0
}

// runA19FramedWedged: ready, framed, then never reads its channel.
func runA19FramedWedged() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Framed: true})
	blockForever()
	return 0
}

// runA19FramedLiar: says framed, with a prefetch of 2, but reads its
// channel as lines, as a worker written before frames would: each line
// that is a job op is a job. j0 it answers at once; the others once it has
// read three job lines after j0, in the order read, each with its line's
// payload (or "ran").
func runA19FramedLiar() int {
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Framed: true, Prefetch: 2})
	sc := bufio.NewScanner(os.NewFile(proto.FDToWorker, "to-worker"))
	sc.Buffer(make([]byte, 1<<20), 2<<20)
	var jobs []proto.Message
	for sc.Scan() {
		m, err := proto.Decode(sc.Bytes())
		if err != nil || m.Op != proto.OpJob {
			if err == nil && m.Op == proto.OpShutdown {
				return 0
			}
			continue
		}
		if m.ID == "j0" {
			c.send(proto.Message{Op: proto.OpDone, ID: m.ID, Result: json.RawMessage(`0`)})
			continue
		}
		jobs = append(jobs, m)
		if len(jobs) < 3 {
			continue
		}
		for _, j := range jobs {
			result := j.Payload
			if len(result) == 0 {
				result = json.RawMessage(`"ran"`)
			}
			c.send(proto.Message{Op: proto.OpDone, ID: j.ID, Result: result})
		}
		jobs = nil
	}
	return 0
}

// resultString is e's result, a JSON string.
func resultString(t *testing.T, e doneEvent) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(e.out.Result, &s), "%s: %s", e.job.ID, e.out.Result)
	return s
}

// A worker's later ready decides how its jobs are written: framed after a
// framed ready, in the line after one that is not. A payload that is not
// JSON reaches the worker only while it takes payloads framed, and fails
// for good (the worker not blamed) while it does not.
func TestAttack19_FramedFollowsTheLatestReady(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode        string
		framedAfter bool
	}{{"a19-framed-flip", false}, {"a19-line-flip", true}} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			b := newBundle(t)
			pool := setup(t, b.spec(tc.mode), b)
			readyWorkers(t, b, pool)

			b.submit(t, "j1", `"first"`)
			e := b.outcome(t)
			require.Equal(t, "j1", e.job.ID)
			require.Empty(t, e.out.Err)
			require.Equal(t, `"first"`, resultString(t, e))

			b.submit(t, "j2", `{not json`)
			e = b.outcome(t)
			require.Equal(t, "j2", e.job.ID)
			if tc.framedAfter {
				require.Empty(t, e.out.Err)
				require.Equal(t, `{not json`, resultString(t, e), "framed now: it gets the bytes as they are")
			} else {
				require.Equal(t, "payload is not valid JSON", e.out.Err, "no longer framed")
				require.True(t, e.out.Permanent)
				require.False(t, e.out.Crashed)
			}

			b.submit(t, "j3", `{"b":2}`)
			e = b.outcome(t)
			require.Equal(t, "j3", e.job.ID)
			require.Empty(t, e.out.Err)
			require.Equal(t, `{"b":2}`, resultString(t, e))
			require.Zero(t, pool.Workers()[0].Restarts, "the worker was not blamed")
		})
	}
}

// Payloads that are not JSON, of each size the session writes its own way
// (inline, from a helper goroutine, past the pipe's buffer), to a worker
// that reads its payloads in the line: each fails for good as "payload is
// not valid JSON", nothing is written, and the worker takes the next job.
func TestAttack19_NonJSONToLineWorker_AllWritePaths(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool := setup(t, b.spec("echo"), b)
	readyWorkers(t, b, pool)
	for i, size := range []int{10, 5 << 10, 100 << 10} {
		id := "bad" + string(rune('0'+i))
		b.submit(t, id, "{"+strings.Repeat("x", size))
		e := b.outcome(t)
		require.Equal(t, id, e.job.ID)
		require.Equal(t, "payload is not valid JSON", e.out.Err, "%d bytes", size)
		require.True(t, e.out.Permanent)
		require.False(t, e.out.Crashed)
		require.False(t, e.out.NotStarted)

		b.submit(t, "ok"+id, `"fine"`)
		e = b.outcome(t)
		require.Equal(t, "ok"+id, e.job.ID)
		require.Empty(t, e.out.Err)
		require.JSONEq(t, `"fine"`, string(e.out.Result))
	}
	require.Zero(t, pool.Workers()[0].Restarts)
}

// A payload that is not JSON among jobs queued behind a running one
// (prefetch, to a worker reading payloads in the line) fails alone: the
// jobs around it run, in order, with their own results.
func TestAttack19_NonJSONQueuedBehindARunningJob(t *testing.T) {
	b := newBundle(t)
	_, pool, fifo := startPrefetchWith(t, b, "prefetch-fifo", []string{`0`}, 2,
		testJob("j2", `{not json`), testJob("j3", `3`), testJob("j4", `4`))
	e := b.outcome(t)
	require.Equal(t, "j2", e.job.ID, "refused as it was queued")
	require.Equal(t, "payload is not valid JSON", e.out.Err)
	require.True(t, e.out.Permanent)
	b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		return len(ws) > 0 && ws[0].Job == "j1" && ws[0].Queued >= 1
	}, "j3 not queued behind j1")
	release(t, fifo)
	for _, id := range []string{"j1", "j3", "j4"} {
		e := b.outcome(t)
		require.Equal(t, id, e.job.ID)
		require.Empty(t, e.out.Err)
	}
	require.Zero(t, pool.Workers()[0].Restarts)
}

// A JSON payload with newlines in its whitespace, shaped so that a line
// reader would see another job's done, written in the line to a worker
// reading lines with a job queued behind it: the payload is compacted
// onto its line, the worker sees it whole, and the queued job's result is
// its own.
func TestAttack19_NewlinesInAJSONPayloadForgeNothing(t *testing.T) {
	b := newBundle(t)
	forge := "[\n{\"op\":\"done\",\"id\":\"j3\",\"result\":\"forged\"}\n,\n{\"op\":\"shutdown\"}\n]"
	big := "[\n" + strings.Repeat("{\"op\":\"done\",\"id\":\"j3\",\"result\":\"forged\"}\n,\n", 2000) + "1]"
	// Short jobs after big bring the pool's average run (which weighs
	// each new one 1/8) back under 10ms, so that the worker is queued two
	// jobs (flow.Queue): big alone runs tens of ms under -race and load.
	first := []string{forge, big}
	for range 32 {
		first = append(first, `1`)
	}
	_, pool, fifo := startPrefetchWith(t, b, "prefetch-fifo", first, 2,
		testJob("j2", forge), testJob("j3", `3`))
	b.waitWorkers(t, pool, func(ws []broker.Worker) bool {
		return len(ws) > 0 && ws[0].Job == "j1" && ws[0].Queued == 2
	}, "j2 and j3 not queued behind j1")
	release(t, fifo)
	got := map[string]string{}
	for range 3 {
		e := b.outcome(t)
		require.Empty(t, e.out.Err, e.job.ID)
		got[e.job.ID] = string(e.out.Result)
	}
	require.Equal(t, `3`, got["j3"], "j3's result is its own")
	require.JSONEq(t, forge, got["j2"])
	require.NotContains(t, got["j2"], "\n", "compacted onto its line")
	require.Zero(t, pool.Workers()[0].Restarts)
	require.Empty(t, b.log.find("does not hold"), "no line of a payload was read as an answer")
}

// A framed worker that never reads its channel, given a payload larger
// than a pipe holds (written from where it is, after its line): the write
// fails at ReadyTimeout, the worker is killed and replaced, and after the
// last try the job's attempt fails; nothing hangs, and the pool stops.
func TestAttack19_FramedLargePayloadToAWedgedWorker(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("a19-framed-wedged")
	spec.ReadyTimeout = 500e6 // 0.5 s
	pool := setup(t, spec, b)
	readyWorkers(t, b, pool)
	b.submit(t, "big", `"`+strings.Repeat("z", 300<<10)+`"`)
	e := b.outcome(t)
	require.Equal(t, "big", e.job.ID)
	require.False(t, e.out.Crashed)
	require.False(t, e.out.NotStarted)
	require.Contains(t, e.out.Err, "could not be handed to a worker in ")
	require.GreaterOrEqual(t, pool.Workers()[0].Restarts, 1)
}

// TestKnownGap_FramedLiarForgesAQueuedJob pins a gap: a worker that says
// framed but reads its channel as lines (one written before frames, its
// ready copied from the SDK's) runs the line of a job op that a payload
// holds. j1's payload holds a job op for j2, queued behind j1 in the same
// worker: the worker's done for it is taken as j2's result. The worker
// broke the protocol it announced, and workerd cannot tell
// (docs/protocol.md, "Framed payloads"). This test fails once workerd can.
func TestKnownGap_FramedLiarForgesAQueuedJob(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	src := &readySource{Source: b.source(), heldFor: "j1", held: []*broker.Job{testJob("j2", `"real"`)}}
	cfg := b.config(b.spec("a19-framed-liar"))
	cfg.Source = src
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(t.Context()))
	t.Cleanup(pool.Stop)
	b.submit(t, "j0", `0`)
	require.Equal(t, "j0", b.outcome(t).job.ID)
	// j1's submitter writes a job op for j2 in j1's payload.
	b.submit(t, "j1", "x\n{\"op\":\"job\",\"id\":\"j2\",\"payload\":\"forged\"}")
	got := map[string]string{}
	for range 2 {
		e := b.outcome(t)
		got[e.job.ID] = string(e.out.Result)
	}
	require.Equal(t, `"forged"`, got["j2"], "gap: j2's result is what j1's submitter wrote")
}
