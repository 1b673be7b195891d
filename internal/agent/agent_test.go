package agent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// The agent follows the startstop contract: Start's context bounds its
// life, Stop before Start returns at once, a second Start does nothing,
// and an agent runs once.
func TestAgent_Lifecycle(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	space, _ := subject.New("default")
	leaving := make(chan wire.Heartbeat, 1)
	sub, err := nc.Subscribe(space.Host("h1"), func(m *nats.Msg) {
		var hb wire.Heartbeat
		if json.Unmarshal(m.Data, &hb) == nil && hb.Leaving {
			leaving <- hb
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())

	a, err := New(Config{Conn: natstest.Conn(t, ns), Host: "h1", Pools: []broker.Spec{service("web", 1, "v1")}})
	require.NoError(t, err)
	<-a.Stopped() // closed before any Start

	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.Start(ctx), "a second Start does nothing")
	select {
	case <-a.Stopped():
		t.Fatal("stopped while running")
	default:
	}
	cancel()
	select {
	case <-a.Stopped():
	case <-time.After(waitLimit):
		t.Fatal("cancelling Start's context did not stop the agent")
	}
	select {
	case hb := <-leaving:
		require.Equal(t, "h1", hb.Host)
	case <-time.After(waitLimit):
		t.Fatal("no leaving heartbeat")
	}
	a.Stop() // idempotent
	require.ErrorContains(t, a.Start(context.Background()), "an Agent runs once")
}

func TestAgent_StopBeforeStart(t *testing.T) {
	t.Parallel()
	ns := natstest.Server(t)
	a, err := New(Config{Conn: natstest.Conn(t, ns), Host: "h1"})
	require.NoError(t, err)
	a.Stop()
	<-a.Stopped()
}
