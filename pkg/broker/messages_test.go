package broker_test

import (
	"context"
	"encoding/json"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/broker"
)

// A worker that did not say it takes messages (its ready op's
// "messages": true) is sent none: SendMessage fails with ErrNoMessages,
// and a broadcast skips it. Found by an outside review: a message was
// written to any worker, and one that reads its channel a line at a time
// (the protocol's simple worker) does not read while it runs a job: a
// message over the pipe's buffer to a worker busy for 5 s killed it, and
// its job crashed.
func TestMessages_NoneToAWorkerThatTakesNone(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	pool := setup(t, b.spec("echo"), b)
	readyWorkers(t, b, pool)
	err := pool.SendMessage(0, json.RawMessage(`"hi"`))
	require.ErrorIs(t, err, broker.ErrNoMessages)
	n, err := pool.Broadcast(json.RawMessage(`"hi"`))
	require.NoError(t, err)
	require.Zero(t, n)
	require.ErrorIs(t, pool.SendMessage(3, json.RawMessage(`1`)), broker.ErrNoWorker)
}

func init() { fakeWorkers["linger"] = runLinger }

// runLinger: ready, taking messages; each message op is sent back as a message
// {"got":data}; at EOF on fd 3 it says "eof" and lingers (SIGTERM
// ignored) until killed, as a worker cleaning up at length does.
func runLinger() int {
	signal.Ignore(syscall.SIGTERM)
	c := openChannel()
	c.send(proto.Message{Op: proto.OpReady, Messages: true})
	for {
		m, err := c.in.Read()
		if err != nil {
			break
		}
		if m.Op == proto.OpMessage {
			got, _ := json.Marshal(map[string]json.RawMessage{"got": m.Data})
			c.send(proto.Message{Op: proto.OpMessage, Data: got})
		}
	}
	c.send(proto.Message{Op: proto.OpMessage, Data: json.RawMessage(`"eof"`)})
	blockForever()
	return 0
}

// During a recycle (or an upgrade, or max_jobs), the slot being replaced
// and its replacement share the index: a message goes to the
// replacement, the worker of that index now. Found by an outside review:
// SendMessage took the old slot as long as its process was up, even once
// its fd 3 was closed, and the message was accepted, then dropped
// unwritten.
func TestMessages_ToTheReplacementDuringARecycle(t *testing.T) {
	t.Parallel()
	b := newBundle(t)
	spec := b.spec("linger")
	cfg := b.config(spec)
	events := make(chan broker.Event, 16)
	cfg.OnEvent = func(e broker.Event) {
		if e.Kind == broker.EventWorkerMessage {
			events <- e
		}
	}
	pool, err := broker.NewPool(cfg)
	require.NoError(t, err)
	require.NoError(t, pool.Start(context.Background()))
	t.Cleanup(pool.Stop)
	old := readyWorkers(t, b, pool)[0]

	recycled := make(chan error, 1)
	go func() { recycled <- pool.Recycle(context.Background()) }()
	t.Cleanup(func() { <-recycled })
	next := func() broker.Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(waitLimit):
			t.Fatal("no message from a worker")
			return broker.Event{}
		}
	}
	// The old worker's fd 3 is closed (its replacement is ready by then);
	// it lingers.
	e := next()
	require.Equal(t, old.PID, e.PID)
	require.JSONEq(t, `"eof"`, string(e.Data))

	require.NoError(t, pool.SendMessage(0, json.RawMessage(`"hi"`)))
	select {
	case e := <-events:
		require.JSONEq(t, `{"got":"hi"}`, string(e.Data))
		require.NotEqual(t, old.PID, e.PID)
	case <-time.After(waitLimit):
		t.Fatal("SendMessage accepted a message that no worker got: it went to the replaced process, whose fd 3 was closed")
	}
}
