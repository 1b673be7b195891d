package conductor_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// A handler is given conductor.RequestTimeout (30 s), and a host on a
// credential of its own gets an answer that comes after 10 s. Found by an
// outside review: its request came through its account's import of
// conductor.>, whose response mapping the server forgets after 10 s, so
// such an answer reached no one and the worker got a 504 at 35 s.
func TestHandlers_HostCredentialAnsweredPastTenSeconds(t *testing.T) {
	t.Parallel()
	const handlerTakes = 12 * time.Second // under conductor.RequestTimeout, over the import's 10 s
	require.Less(t, handlerTakes, conductor.RequestTimeout)
	rc := startClusterOf(t, conductor.Config{Handlers: map[string]conductor.RequestHandler{
		"slow": func(ctx context.Context, _ *conductor.WorkerRequest) (any, error) {
			select {
			case <-time.After(handlerTakes): // the handler's own work, the scenario
				return map[string]string{"answer": "in time"}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}}, auth.Credential{ID: "root", Role: auth.Admin}, auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}})
	ask := func(id string) (*nats.Msg, error) {
		nc, _ := rc.connectAs(t, id)
		m := nats.NewMsg("conductor.default.requests.slow")
		m.Header.Set(names.HeaderHost, "h1")
		m.Header.Set(names.HeaderPool, "squares")
		m.Header.Set(names.HeaderWorker, "0")
		m.Data = []byte(`1`)
		return nc.RequestMsg(m, 20*time.Second)
	}
	// The same request from the namespace's own account (a workerd on
	// the shared token), at the same time: answered.
	rootErr := make(chan error, 1)
	go func() {
		_, err := ask("root")
		rootErr <- err
	}()
	r, err := ask("h1")
	require.NoError(t, <-rootErr, "the control: the handler answers in time on the namespace's own account")
	require.NoError(t, err, "a handler answering after %v, within its %v, must reach a host on a credential", handlerTakes, conductor.RequestTimeout)
	require.JSONEq(t, `{"answer":"in time"}`, string(r.Data))
}

// One host's requests take at most 64 of conductord's 256 handler slots:
// past them its requests are answered 429, and another host's quick
// request is served. Found by an outside review: one host's slow
// requests took every slot.
func TestHandlers_OneHostHoldsAShareOfTheSlots(t *testing.T) {
	t.Parallel()
	const perHost = 64
	started := make(chan struct{}, 256)
	release := make(chan struct{})
	rc := startClusterOf(t, conductor.Config{Handlers: map[string]conductor.RequestHandler{
		"hold": func(ctx context.Context, _ *conductor.WorkerRequest) (any, error) {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return 1, nil
		},
		"quick": func(context.Context, *conductor.WorkerRequest) (any, error) { return 2, nil },
	}},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
		auth.Credential{ID: "h2", Role: auth.Host, Types: []string{"other"}},
	)
	h1, _ := rc.connectAs(t, "h1")
	h2, _ := rc.connectAs(t, "h2")
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	busy := make(chan string, 256)
	var wg sync.WaitGroup
	for range 2 * perHost {
		wg.Go(func() {
			r, err := h1.Request("conductor.default.requests.hold", []byte(`1`), 40*time.Second)
			if err == nil {
				busy <- r.Header.Get(names.HeaderStatus)
			}
		})
	}
	for i := range perHost {
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of h1's requests reached the handler", i)
		}
	}
	for range perHost {
		select {
		case code := <-busy:
			require.Equal(t, "429", code, "past its share, h1 is answered busy")
		case <-time.After(30 * time.Second):
			t.Fatal("h1's requests past its share were not answered")
		}
	}
	r, err := h2.Request("conductor.default.requests.quick", []byte(`1`), 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, "200", r.Header.Get(names.HeaderStatus), "h2 served while h1 holds its share: %s", r.Data)
	once.Do(func() { close(release) })
	wg.Wait()
}

// A handler's result too large for a NATS message (the embedded
// server's 8 MiB) is answered 413 at once. Found by an outside review:
// it was logged and never answered, and the worker waited 35 s for a
// 504.
func TestHandlers_ResultTooLargeAnswered413(t *testing.T) {
	t.Parallel()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Handlers: map[string]conductor.RequestHandler{
		"huge": func(context.Context, *conductor.WorkerRequest) (any, error) {
			return strings.Repeat("x", 9<<20), nil
		},
	}})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	r, err := nc.Request("conductor.default.requests.huge", []byte(`1`), 10*time.Second)
	require.NoError(t, err, "a result that cannot be sent must be answered with an error, not dropped")
	require.Equal(t, "413", r.Header.Get(names.HeaderStatus))
}

// Stop waits for the handlers a while (their contexts end with it), and
// no longer: a handler that does not heed its ctx is left running, and
// logged. Found by an outside review: Stop waited for ever.
func TestHandlers_StopWaitsForAHandlerAWhile(t *testing.T) {
	t.Parallel()
	running := make(chan struct{})
	never := make(chan struct{})
	var c *conductor.Conductor
	t.Cleanup(func() { <-c.Stopped() }) // after the handler is let go, below
	t.Cleanup(func() { close(never) })
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Handlers: map[string]conductor.RequestHandler{
		"stuck": func(context.Context, *conductor.WorkerRequest) (any, error) {
			close(running)
			<-never // ignores its ctx
			return nil, nil
		},
	}})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, nc.PublishRequest("conductor.default.requests.stuck", nc.NewInbox(), []byte(`1`)))
	<-running
	go c.Stop()
	select {
	case <-c.Stopped():
	case <-time.After(conductor.RequestTimeout + 5*time.Second):
		t.Fatal("Stop still waits for a handler that ignores its ctx, past RequestTimeout")
	}
}
