package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// handleByType is a handler whose behaviour is chosen by the job type.
func handleByType(ctx context.Context, job *worker.Job) (any, error) {
	switch job.Type {
	case "square":
		var n int
		if err := job.Decode(&n); err != nil {
			return nil, worker.Permanent(err)
		}
		return n * n, nil
	case "raw":
		return job.Payload, nil
	case "null":
		return nil, nil
	case "fail":
		return "ignored", errors.New("boom")
	case "permanent":
		return nil, fmt.Errorf("validate: %w", worker.Permanent(errors.New("bad input")))
	case "unencodable":
		return make(chan int), nil
	case "panic":
		panic("kaboom")
	}
	return nil, fmt.Errorf("unknown type %q", job.Type)
}

func TestRun_Done(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		typ     string
		payload string
		want    proto.Message // without Op and ID
	}{
		{"Result", "square", `7`, proto.Message{Result: json.RawMessage(`49`)}},
		{"RawResultPassesThrough", "raw", `{"a": [1, 2]}`, proto.Message{Result: json.RawMessage(`{"a":[1,2]}`)}},
		{"NullResultIsOmitted", "null", `1`, proto.Message{}},
		{"Error", "fail", `1`, proto.Message{Error: "boom"}},
		{"PermanentError", "permanent", `1`, proto.Message{Error: "validate: bad input", Permanent: true}},
		{"BadPayload", "square", `"seven"`, proto.Message{
			Error:     "job j1: decode payload: json: cannot unmarshal string into Go value of type int",
			Permanent: true,
		}},
		{"UnencodableResult", "unencodable", `1`, proto.Message{
			Error:     "encode result: json: unsupported type: chan int",
			Permanent: true,
		}},
		{"Panic", "panic", `1`, proto.Message{Error: "panic: kaboom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, handleByType)

			b.sendJob(t, "j1", tt.typ, tt.payload)

			want := tt.want
			want.Op, want.ID = proto.OpDone, "j1"
			require.Equal(t, want, b.recv(t))
			b.send(t, `{"op":"shutdown"}`)
			require.NoError(t, b.wait(t))
		})
	}
}

func TestRun_PanicKeepsServing(t *testing.T) {
	t.Parallel()
	b := setup(t, handleByType)

	b.sendJob(t, "j1", "panic", `1`)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Error: "panic: kaboom"}, b.recv(t))
	b.sendJob(t, "j2", "square", `3`)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Result: json.RawMessage(`9`)}, b.recv(t))

	require.Contains(t, b.logs.String(), "handler panicked")
}

func TestRun_CancelOp(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, bl.handle)

	b.sendJob(t, "j1", "block", `1`)
	bl.waitStarted(t)
	b.send(t, `{"op":"cancel","id":"other"}`) // not running: ignored
	b.send(t, `{"op":"cancel","id":"j1"}`)

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Error: "worker: job cancelled by workerd"}, b.recv(t))
	require.Contains(t, b.logs.String(), "job=other")

	// The worker serves the next job with a fresh context.
	b.sendJob(t, "j2", "block", `1`)
	bl.waitStarted(t)
	close(bl.release)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Result: json.RawMessage(`"released"`)}, b.recv(t))
}

func TestRun_ShutdownOp(t *testing.T) {
	t.Parallel()

	t.Run("Idle", func(t *testing.T) {
		t.Parallel()
		b := setup(t, handleByType)

		b.send(t, `{"op":"shutdown"}`)

		require.NoError(t, b.wait(t))
	})
	t.Run("WhileRunning", func(t *testing.T) {
		t.Parallel()
		bl := newBlocker()
		b := setup(t, bl.handle)
		b.sendJob(t, "j1", "block", `1`)
		bl.waitStarted(t)

		b.send(t, `{"op":"shutdown"}`)
		// A job after shutdown is refused, and so shows that shutdown was seen.
		b.sendJob(t, "j2", "block", `1`)
		require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Error: "worker: shutting down"}, b.recv(t))
		close(bl.release)

		require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"released"`)}, b.recv(t))
		require.NoError(t, b.wait(t))
	})
}

func TestRun_ShutdownOpThenChannelClosed(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, bl.handle)
	b.sendJob(t, "j1", "block", `1`)
	bl.waitStarted(t)

	b.send(t, `{"op":"shutdown"}`)
	require.NoError(t, b.in.Close()) // workerd has nothing more to say

	close(bl.release) // the handler was not cancelled: it returns "released"
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"released"`)}, b.recv(t))
	require.NoError(t, b.wait(t))
}

func TestRun_ContextDone(t *testing.T) {
	t.Parallel()

	t.Run("Idle", func(t *testing.T) {
		t.Parallel()
		b := setup(t, handleByType)

		b.stop()

		require.Equal(t, proto.Message{Op: proto.OpBusy}, b.recv(t))
		require.NoError(t, b.wait(t))
	})
	t.Run("WhileRunningIsGraceful", func(t *testing.T) {
		t.Parallel()
		bl := newBlocker()
		b := setup(t, bl.handle)
		b.sendJob(t, "j1", "block", `1`)
		bl.waitStarted(t)

		b.stop()

		require.Equal(t, proto.Message{Op: proto.OpBusy}, b.recv(t))
		close(bl.release) // the handler's context was not cancelled: it returns "released"
		require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"released"`)}, b.recv(t))
		require.NoError(t, b.wait(t))
	})
	t.Run("HardStopCancelsHandler", func(t *testing.T) {
		t.Parallel()
		bl := newBlocker()
		b := setup(t, bl.handle)
		b.sendJob(t, "j1", "block", `1`)
		bl.waitStarted(t)

		b.stop()
		require.Equal(t, proto.Message{Op: proto.OpBusy}, b.recv(t))
		b.hardStop()

		require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Error: "worker: hard stop"}, b.recv(t))
		require.NoError(t, b.wait(t))
	})
}

func TestRun_ChannelClosed(t *testing.T) {
	t.Parallel()

	t.Run("Idle", func(t *testing.T) {
		t.Parallel()
		b := setup(t, handleByType)

		require.NoError(t, b.in.Close())

		require.ErrorIs(t, b.wait(t), worker.ErrChannelClosed)
	})
	t.Run("WhileRunning", func(t *testing.T) {
		t.Parallel()
		bl := newBlocker()
		b := setup(t, bl.handle)
		b.sendJob(t, "j1", "block", `1`)
		bl.waitStarted(t)

		require.NoError(t, b.in.Close())

		require.ErrorIs(t, <-bl.cause, worker.ErrChannelClosed)
		require.ErrorIs(t, b.wait(t), worker.ErrChannelClosed) // and no done was sent
	})
}

func TestRun_BadInputIsIgnored(t *testing.T) {
	t.Parallel()
	b := setup(t, handleByType)

	b.send(t, `not json`)
	b.send(t, `{"id":"no-op"}`)
	b.send(t, `{"op":"job","payload":`+strings.Repeat("1", proto.DefaultMaxLine)+`}`)
	b.send(t, ``)
	b.send(t, `{"op":"frobnicate"}`)
	b.send(t, `{"op":"job","type":"square","payload":2}`) // no id
	b.sendJob(t, "j1", "square", `5`)

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`25`)}, b.recv(t))
	logs := b.logs.String()
	require.Equal(t, 3, strings.Count(logs, "ignoring a bad line"), logs)
	require.Contains(t, logs, "op=frobnicate")
	require.Contains(t, logs, "job without an id")
}

func TestRun_JobWhileBusyIsRefused(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, bl.handle, worker.WithPrefetch(0))
	b.sendJob(t, "j1", "block", `1`)
	bl.waitStarted(t)

	b.sendJob(t, "j2", "block", `1`)

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Error: "worker: busy with job j1"}, b.recv(t))
	close(bl.release)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"released"`)}, b.recv(t))
}

func TestRun_PrefetchQueuesJobsInOrder(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, bl.handle, worker.WithPrefetch(2))
	b.sendJob(t, "j1", "block", `1`)
	require.Equal(t, "j1", bl.waitStarted(t).ID)

	b.sendJob(t, "j2", "block", `2`)
	b.sendJob(t, "j3", "block", `3`)
	b.sendJob(t, "j4", "block", `4`) // over the prefetch of 2

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j4", Error: "worker: busy with job j1"}, b.recv(t))
	close(bl.release)
	for _, id := range []string{"j1", "j2", "j3"} {
		if id != "j1" {
			require.Equal(t, id, bl.waitStarted(t).ID)
		}
		require.Equal(t, proto.Message{Op: proto.OpDone, ID: id, Result: json.RawMessage(`"released"`)}, b.recv(t))
	}
	b.send(t, `{"op":"shutdown"}`)
	require.NoError(t, b.wait(t))
}

func TestRun_CancelQueuedJob(t *testing.T) {
	t.Parallel()
	bl := newBlocker()
	b := setup(t, bl.handle)
	b.sendJob(t, "j1", "block", `1`)
	bl.waitStarted(t)
	b.sendJob(t, "j2", "block", `2`)

	b.send(t, `{"op":"cancel","id":"j2"}`)

	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Error: "worker: job cancelled by workerd"}, b.recv(t))
	close(bl.release)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"released"`)}, b.recv(t))
	b.send(t, `{"op":"shutdown"}`)
	require.NoError(t, b.wait(t))
	require.Empty(t, bl.started, "the cancelled job ran")
}

// A worker that stops leaves its queued jobs unanswered: workerd gives them
// to other workers when it exits, as never started.
func TestRun_StopLeavesQueuedJobs(t *testing.T) {
	t.Parallel()
	for _, stop := range []string{"context", "shutdown op"} {
		t.Run(stop, func(t *testing.T) {
			t.Parallel()
			bl := newBlocker()
			b := setup(t, bl.handle, worker.WithPrefetch(1))
			b.sendJob(t, "j1", "block", `1`)
			bl.waitStarted(t)
			b.sendJob(t, "j2", "block", `2`)
			// j3, over the prefetch, is refused once j2 is queued.
			b.sendJob(t, "j3", "block", `3`)
			require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j3", Error: "worker: busy with job j1"}, b.recv(t))

			if stop == "context" {
				b.stop()
				require.Equal(t, proto.Message{Op: proto.OpBusy}, b.recv(t))
			} else {
				b.send(t, `{"op":"shutdown"}`)
				// j4 is refused once the shutdown is seen.
				b.sendJob(t, "j4", "block", `4`)
				require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j4", Error: "worker: shutting down"}, b.recv(t))
			}
			close(bl.release)

			require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"released"`)}, b.recv(t))
			require.NoError(t, b.wait(t))
			require.Empty(t, bl.started, "a queued job ran after the stop")
		})
	}
}

func TestRun_WriteError(t *testing.T) {
	t.Parallel()
	inR, inW := io.Pipe()
	defer inW.Close()
	outR, outW := io.Pipe()
	require.NoError(t, outR.Close())

	err := worker.Run(context.Background(), handleByType, worker.WithChannel(inR, outW))

	require.ErrorIs(t, err, io.ErrClosedPipe)
	require.ErrorContains(t, err, "write ready")
}

func TestRun_BadArguments(t *testing.T) {
	t.Parallel()

	err := worker.Run(context.Background(), nil, worker.WithChannel(strings.NewReader(""), io.Discard))
	require.EqualError(t, err, "worker: nil handler")
	err = worker.Run(context.Background(), handleByType, worker.WithChannel(nil, io.Discard))
	require.EqualError(t, err, "worker: WithChannel needs both a reader and a writer")
}

// FuzzRun feeds arbitrary input to a worker: it must neither panic nor hang,
// and must end with the end of its input or a shutdown.
func FuzzRun(f *testing.F) {
	f.Add([]byte(`{"op":"job","id":"j1","type":"square","payload":3,"attempt":1}` + "\n"))
	f.Add([]byte(`{"op":"job","id":"j1","type":"panic"}` + "\n" + `{"op":"cancel","id":"j1"}` + "\n"))
	f.Add([]byte(`{"op":"job","id":"j1","type":"raw","payload":{"a":1}}` + "\n" + `{"op":"shutdown"}`))
	f.Add([]byte("garbage\n{\"op\":\"\"}\n\n{\"op\":\"x\"}"))
	f.Fuzz(func(t *testing.T, input []byte) {
		var out bytes.Buffer
		err := worker.Run(context.Background(), handleByType,
			worker.WithChannel(bytes.NewReader(input), &out), worker.WithLogger(discardLogger))
		if err != nil {
			require.ErrorIs(t, err, worker.ErrChannelClosed)
		}
		r := proto.NewReader(&out, 0)
		for {
			m, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "the worker wrote a bad line")
			require.Contains(t, []proto.Op{proto.OpReady, proto.OpDone}, m.Op)
		}
	})
}

// TestRun_PrefetchFromEnv is not parallel: t.Setenv forbids it.
func TestRun_PrefetchFromEnv(t *testing.T) {
	firstLine := func(t *testing.T, opts ...worker.Option) (proto.Message, error) {
		t.Helper()
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			errc <- worker.Run(context.Background(), handleByType, append([]worker.Option{worker.WithChannel(inR, outW)}, opts...)...)
			outW.Close()
		}()
		m, err := proto.NewReader(outR, 0).Read()
		inW.Close() // the channel ends: Run returns
		runErr := <-errc
		if err != nil {
			return proto.Message{}, runErr
		}
		return m, nil
	}

	t.Setenv("CONDUCTOR_PREFETCH", "2")
	m, err := firstLine(t)
	require.NoError(t, err)
	require.Equal(t, proto.Message{Op: proto.OpReady, Prefetch: 2, Cache: worker.DefaultLookupCache, Framed: true}, m)

	m, err = firstLine(t, worker.WithPrefetch(1))
	require.NoError(t, err)
	require.Equal(t, proto.Message{Op: proto.OpReady, Prefetch: 1, Cache: worker.DefaultLookupCache, Framed: true}, m, "WithPrefetch wins over the environment")

	t.Setenv("CONDUCTOR_PREFETCH", "0")
	m, err = firstLine(t)
	require.NoError(t, err)
	require.Equal(t, proto.Message{Op: proto.OpReady, Cache: worker.DefaultLookupCache, Framed: true}, m)

	t.Setenv("CONDUCTOR_PREFETCH", "lots")
	_, err = firstLine(t)
	require.ErrorContains(t, err, `CONDUCTOR_PREFETCH="lots"`)
}

// The SDK holds answers back only while handlers average under 50 µs: a
// job that ends slowly is answered before the next queued job runs.
func TestRun_AnswerNotHeldBehindALongJob(t *testing.T) {
	t.Parallel()
	gates := map[string]chan struct{}{"j1": make(chan struct{}), "j2": make(chan struct{})}
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		select {
		case <-gates[job.ID]:
			return job.ID, nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}, worker.WithPrefetch(1))
	b.sendJob(t, "j1", "gate", `1`)
	b.sendJob(t, "j2", "gate", `2`)
	// Refused once j2 is queued: then j1 ends with j2 behind it.
	b.sendJob(t, "j3", "gate", `3`)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j3", Error: "worker: busy with job j1"}, b.recv(t))

	close(gates["j1"])
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"j1"`)}, b.recv(t), "j2 runs on; j1's answer must come")
	close(gates["j2"])
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Result: json.RawMessage(`"j2"`)}, b.recv(t))
	b.send(t, `{"op":"shutdown"}`)
	require.NoError(t, b.wait(t))
}

// While jobs are short, the SDK holds answers back as it runs the queued
// jobs behind them; a queued job that then runs long holds them back no
// more than a millisecond.
func TestRun_HeldAnswersWrittenWhileALongJobRuns(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		if job.Type == "gate" {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}
		return job.ID, nil
	}, worker.WithPrefetch(4))
	// A first short job, answered at once: the average is now short.
	b.sendJob(t, "j0", "fast", `0`)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j0", Result: json.RawMessage(`"j0"`)}, b.recv(t))
	// One write: a short job, then one that runs until the gate opens.
	_, err := io.WriteString(b.in, `{"op":"job","id":"j1","type":"fast","payload":1,"attempt":1}`+"\n"+
		`{"op":"job","id":"j2","type":"gate","payload":2,"attempt":1}`+"\n")
	require.NoError(t, err)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`"j1"`)}, b.recv(t), "j1's answer waits for j2")
	close(gate)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j2", Result: json.RawMessage(`"j2"`)}, b.recv(t))
	b.send(t, `{"op":"shutdown"}`)
	require.NoError(t, b.wait(t))
}

// A job is run when the lines after it in the same write are blank or bad:
// the worker does not wait for more input to start it.
func TestRun_JobFollowedByBlankOrBadLines(t *testing.T) {
	t.Parallel()
	for name, after := range map[string]string{
		"blank":      "\n",
		"whitespace": "   \t \n",
		"garbage":    "garbage\n",
		"no op":      `{"id":"x"}` + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, handleByType, worker.WithLogger(discardLogger))
			_, err := io.WriteString(b.in, `{"op":"job","id":"j1","type":"square","payload":3,"attempt":1}`+"\n"+after)
			require.NoError(t, err)
			require.Equal(t, proto.Message{Op: proto.OpDone, ID: "j1", Result: json.RawMessage(`9`)}, b.recv(t))
			b.send(t, `{"op":"shutdown"}`)
			require.NoError(t, b.wait(t))
		})
	}
}
