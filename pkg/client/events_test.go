package client_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

var (
	eventTime = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	exitEvent = wire.Event{
		Time: eventTime, Kind: wire.EventWorkerExit, Host: "a", Pool: "squares", Index: 1, PID: 42,
		Reason: wire.ReasonFailure, Exit: "exit status 2", Code: 2, Uptime: wire.Duration(3 * time.Second),
	}
	failedEvent = wire.Event{
		Time: eventTime, Kind: wire.EventPoolFailed, Host: "a", Pool: "squares",
		RetryAt: eventTime.Add(time.Minute), Error: "5 exits within 1m0s",
	}
)

// publishEvent announces e as a worker or pool event, as workerd does.
func publishEvent(t *testing.T, nc *nats.Conn, scope string, e wire.Event) {
	t.Helper()
	space, err := subject.New("default")
	require.NoError(t, err)
	subj := space.PoolEvent(e.Pool, e.Kind)
	if scope == client.ScopeWorker {
		subj = space.WorkerEvent(e.Pool, e.Kind)
	}
	data, err := json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, nc.Publish(subj, data))
	require.NoError(t, nc.Flush())
}

func TestClient_Events(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	events, err := c.Events(ctx, "")
	require.NoError(t, err)
	space, _ := subject.New("default")
	require.NoError(t, bundle.nc.Publish(space.WorkerEvent("squares", "exit"), []byte("garbage")))
	publishEvent(t, bundle.nc, client.ScopeWorker, exitEvent)
	publishEvent(t, bundle.nc, client.ScopePool, failedEvent)

	require.Equal(t, client.Event{
		Scope: client.ScopeWorker, Time: eventTime, Kind: client.EventWorkerExit, Host: "a", Pool: "squares",
		Index: 1, PID: 42, Reason: client.ReasonFailure, Exit: "exit status 2", Code: 2, Uptime: client.Duration(3 * time.Second),
	}, receive(t, events), "the garbage is skipped")
	require.Equal(t, client.Event{
		Scope: client.ScopePool, Time: eventTime, Kind: client.EventPoolFailed, Host: "a", Pool: "squares",
		RetryAt: eventTime.Add(time.Minute), Error: "5 exits within 1m0s",
	}, receive(t, events))

	cancel()
	select {
	case _, open := <-events:
		require.False(t, open, "no event after the context ended")
	case <-time.After(10 * time.Second):
		t.Fatal("the event channel was not closed when the context ended")
	}
}

func TestClient_EventsOfOnePool(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	_, err := c.Events(ctx, "bad.pool")
	require.ErrorIs(t, err, subject.ErrBadToken)
	events, err := c.Events(ctx, "squares")
	require.NoError(t, err)
	other := failedEvent
	other.Pool = "other"
	publishEvent(t, bundle.nc, client.ScopePool, other)
	publishEvent(t, bundle.nc, client.ScopePool, failedEvent)
	require.Equal(t, "squares", receive(t, events).Pool, "the other pool's event is not delivered")
}

func receive(t *testing.T, events <-chan client.Event) client.Event {
	t.Helper()
	select {
	case e, ok := <-events:
		require.True(t, ok, "event channel closed")
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return client.Event{}
	}
}

func TestEvent_JSON(t *testing.T) {
	t.Parallel()
	e := client.Event{
		Scope: client.ScopeWorker, Time: eventTime, Kind: client.EventWorkerMessage, Host: "a", Pool: "p",
		Index: 2, PID: 7, Uptime: client.Duration(1500 * time.Millisecond), Data: json.RawMessage(`{"x":1}`),
	}
	data, err := json.Marshal(e)
	require.NoError(t, err)
	require.JSONEq(t, `{"scope":"worker","time":"2026-11-23T10:00:00Z","kind":"message","host":"a","pool":"p",
		"index":2,"pid":7,"uptime":"1.5s","data":{"x":1}}`, string(data))
	var back client.Event
	require.NoError(t, json.Unmarshal(data, &back))
	require.Equal(t, e, back)
}
