package agent

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/pkg/broker"
)

// "Any NATS responder" answers a worker's request (docs/messages.md): a
// NATS micro service's error (its headers Nats-Service-Error-Code and
// Nats-Service-Error, an empty body) reaches the worker as the error it
// is. Found by an outside review: workerd read only Conductor-Status,
// and handed the worker a success with no data.
func TestAskConductor_MicroServiceErrorIsAnError(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	svcConn := natstest.Conn(t, ns)
	svc, err := micro.AddService(svcConn, micro.Config{Name: "progress", Version: "1.0.0"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, svc.AddEndpoint("progress", micro.HandlerFunc(func(r micro.Request) {
		_ = r.Error("503", "the progress store is down", nil)
	}), micro.WithEndpointSubject("conductor.default.requests.progress")))
	require.NoError(t, svcConn.Flush())

	a, err := New(Config{Conn: natstest.Conn(t, ns), Host: "h1"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); <-a.Stopped() })
	require.NoError(t, a.Start(ctx))

	replies := make(chan broker.Reply, 1)
	a.workerRequests("squares")(broker.Request{Index: 0, Kind: broker.RequestCommand, Command: "progress", Data: []byte(`{"done":5}`)},
		func(r broker.Reply) { replies <- r })
	select {
	case r := <-replies:
		require.NotEmpty(t, r.Error, "the responder failed (503 %q), the worker was told it succeeded with data %q", "the progress store is down", r.Data)
		require.Equal(t, 503, r.Code)
	case <-time.After(waitLimit):
		t.Fatal("no answer")
	}
}
