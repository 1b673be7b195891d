package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// A handler's Request goes to workerd as a request op, and its reply's
// data is decoded into v; a 404 matches ErrUnhandled.
func TestRequest_AskAndAnswer(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 2)
	var answer struct{ Seen int }
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		errs <- job.Request(ctx, "progress", map[string]int{"done": 5}, &answer)
		errs <- job.Request(ctx, "nobody", nil, nil)
		return nil, nil
	})
	b.sendJob(t, "j1", "t", "1")
	m := b.recv(t)
	require.Equal(t, proto.Message{Op: proto.OpRequest, Req: m.Req, Command: "progress", Data: []byte(`{"done":5}`)}, m)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"data":{"seen":5}}`, m.Req))
	require.NoError(t, <-errs)
	require.Equal(t, 5, answer.Seen)

	m = b.recv(t)
	require.Equal(t, "nobody", m.Command)
	require.JSONEq(t, `null`, string(m.Data))
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"error":"unhandled command \"nobody\": no handler answers it","code":404}`, m.Req))
	err := <-errs
	require.ErrorIs(t, err, worker.ErrUnhandled)
	require.EqualError(t, err, `worker: request nobody: unhandled command "nobody": no handler answers it (404)`)
	require.Equal(t, proto.OpDone, b.recv(t).Op)
}

// Messages from the conductor side reach the WithMessages handler, in
// order, beside a running job; a handler's panic is logged and the next
// message handled; a message's handler may ask with a request of its
// own.
func TestMessages_HandledInOrder(t *testing.T) {
	t.Parallel()
	got := make(chan string, 8)
	release := make(chan struct{})
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		<-release
		return nil, nil
	}, worker.WithMessages(func(ctx context.Context, m *worker.Message) {
		if string(m.Data) == `"panic"` {
			panic("on purpose")
		}
		if string(m.Data) == `"ask"` {
			got <- fmt.Sprint(m.Request(ctx, "seen", 1, nil))
			return
		}
		got <- string(m.Data)
	}))
	b.sendJob(t, "j1", "t", "1") // running all along
	for _, m := range []string{`1`, `"panic"`, `{"a":2}`, `[3]`} {
		b.send(t, `{"op":"message","data":`+m+`}`)
	}
	for _, want := range []string{`1`, `{"a":2}`, `[3]`} {
		select {
		case m := <-got:
			require.Equal(t, want, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("message %s not handled", want)
		}
	}
	b.send(t, `{"op":"message","data":"ask"}`)
	req := b.recv(t)
	require.Equal(t, proto.OpRequest, req.Op)
	require.Equal(t, "seen", req.Command)
	b.send(t, fmt.Sprintf(`{"op":"reply","req":%d,"data":{}}`, req.Req))
	require.Equal(t, "<nil>", <-got)
	require.Contains(t, b.logs.String(), "message handler panicked")
	close(release)
	require.Equal(t, proto.OpDone, b.recv(t).Op)
}

// Counts go to workerd with the job's answer, summed in one op; a bad
// name or number is refused in the worker and spoils nothing else.
func TestCount_WrittenWithTheAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t, func(ctx context.Context, job *worker.Job) (any, error) {
		job.Count("emails", 2)
		job.Count("emails", 1)
		job.Count("bytes_out", 512)
		job.Count("bad name", 1)
		return nil, nil
	}, worker.WithPrefetch(0))
	b.sendJob(t, "j1", "t", "1")
	m := b.recv(t)
	require.Equal(t, proto.Message{Op: proto.OpCount, Counters: map[string]float64{"emails": 3, "bytes_out": 512}}, m)
	require.Equal(t, proto.OpDone, b.recv(t).Op)
	require.Contains(t, b.logs.String(), "count refused")
}
