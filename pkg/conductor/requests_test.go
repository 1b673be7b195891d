package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
)

// Config.Handlers answer the workers' requests of their commands, on the
// plain subject (the worker named by workerd's headers) and on a host
// credential's (named by the credential); a handler's error answers with
// its code, a panic with 500, and conductord goes on.
func TestHandlers_AnswerWorkerRequests(t *testing.T) {
	t.Parallel()
	got := make(chan *WorkerRequest, 4)
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Handlers: map[string]RequestHandler{
		"progress": func(_ context.Context, r *WorkerRequest) (any, error) {
			got <- r
			var p struct{ Done int }
			if err := json.Unmarshal(r.Data, &p); err != nil {
				return nil, &RequestError{Code: 400, Msg: "not a progress: " + err.Error()}
			}
			return map[string]int{"seen": p.Done}, nil
		},
		"boom": func(context.Context, *WorkerRequest) (any, error) { panic("at the disco") },
		"fail": func(context.Context, *WorkerRequest) (any, error) { return nil, errors.New("disk on fire") },
	}})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)

	ask := func(subj, data string) (int, string) {
		t.Helper()
		m := nats.NewMsg(subj)
		m.Header.Set(names.HeaderHost, "web-1")
		m.Header.Set(names.HeaderPool, "squares")
		m.Header.Set(names.HeaderWorker, "3")
		m.Data = []byte(data)
		r, err := nc.RequestMsg(m, 5*time.Second)
		require.NoError(t, err)
		code := r.Header.Get(names.HeaderStatus)
		return map[string]int{"200": 200, "400": 400, "500": 500}[code], string(r.Data)
	}
	code, body := ask(c.space.Request("progress"), `{"done":5}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"seen":5}`, body)
	r := <-got
	require.Equal(t, &WorkerRequest{Command: "progress", Data: json.RawMessage(`{"done":5}`), Host: "web-1", Pool: "squares", Worker: 3}, r)

	code, body = ask(c.space.RequestAs("h9", "progress"), `{"done":6}`)
	require.Equal(t, 200, code, body)
	r = <-got
	require.Equal(t, "h9", r.Credential)
	require.Empty(t, r.Host, "a credential conductord does not hold names no host; workerd's header is not taken")

	code, body = ask(c.space.Request("progress"), `[`)
	require.Equal(t, 400, code)
	require.Contains(t, body, "not a progress")
	<-got
	code, body = ask(c.space.Request("boom"), `1`)
	require.Equal(t, 500, code)
	require.Contains(t, body, `handler of \"boom\" panicked: at the disco`)
	code, body = ask(c.space.Request("fail"), `1`)
	require.Equal(t, 500, code)
	require.Contains(t, body, "disk on fire")

	_, err = nc.Request(c.space.Request("nobody"), nil, time.Second)
	require.ErrorIs(t, err, nats.ErrNoResponders, "an unknown command has no responder: workerd answers it unhandled")
}

// A handler name that is no subject token is refused at start.
func TestHandlers_BadCommandRefused(t *testing.T) {
	t.Parallel()
	c, err := New(Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Handlers: map[string]RequestHandler{
		"a.b": func(context.Context, *WorkerRequest) (any, error) { return nil, nil },
	}})
	require.NoError(t, err)
	err = c.Start(context.Background())
	t.Cleanup(c.Stop)
	require.ErrorContains(t, err, "command")
}
