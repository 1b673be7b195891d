package worker_test

import (
	"context"
	"fmt"
	"testing"

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
