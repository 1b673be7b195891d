package agent

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

const waitLimit = 15 * time.Second

// service is a protocol=none pool of shell processes that print a line and
// wait to be stopped.
func service(name string, count int, line string) broker.Spec {
	return broker.Spec{
		Name: name, Count: count, Protocol: broker.ProtocolNone,
		Cmd:         []string{"/bin/sh", "-c", "echo " + line + " $$; exec sleep 600"},
		KillTimeout: 2 * time.Second,
	}
}

// controlBundle is an agent on a real NATS server, and what it announced.
type controlBundle struct {
	a     *Agent
	nc    *nats.Conn
	space subject.Space

	mu      sync.Mutex
	events  []wire.Event
	lines   []wire.LogLine
	arrived chan struct{} // closed (and replaced) when an event arrives
}

func setupAgent(t *testing.T, cfg Config) *controlBundle {
	t.Helper()
	ns := natstest.Server(t)
	b := &controlBundle{nc: natstest.Conn(t, ns), arrived: make(chan struct{})}
	b.space, _ = subject.New("default")
	for _, subj := range []string{b.space.WorkerEvents(), b.space.PoolEvents()} {
		_, err := b.nc.Subscribe(subj, func(m *nats.Msg) {
			var e wire.Event // assert, not require: this is NATS's goroutine
			assert.NoError(t, json.Unmarshal(m.Data, &e))
			assert.True(t, strings.HasSuffix(m.Subject, "."+e.Pool+"."+e.Kind), m.Subject)
			b.mu.Lock()
			b.events = append(b.events, e)
			close(b.arrived)
			b.arrived = make(chan struct{})
			b.mu.Unlock()
		})
		require.NoError(t, err)
	}
	_, err := b.nc.Subscribe(b.space.AllLogs(), func(m *nats.Msg) {
		var l wire.LogLine
		assert.NoError(t, json.Unmarshal(m.Data, &l))
		b.mu.Lock()
		b.lines = append(b.lines, l)
		b.mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, b.nc.Flush())

	cfg.Conn, cfg.Host = natstest.Conn(t, ns), "h1"
	// cfg.Logger as the test set it: nil discards.
	b.a, err = New(cfg)
	require.NoError(t, err)
	require.NoError(t, b.a.Start(context.Background()))
	t.Cleanup(b.a.Stop)
	return b
}

// send sends cmd to the agent and returns its reply.
func (b *controlBundle) send(t *testing.T, cmd wire.Command) wire.CommandReply {
	t.Helper()
	data, _ := json.Marshal(cmd)
	m, err := b.nc.Request(b.space.Control("h1"), data, waitLimit)
	require.NoError(t, err)
	var r wire.CommandReply
	require.NoError(t, json.Unmarshal(m.Data, &r))
	return r
}

// workers waits until the heartbeat shows n running workers of pool that
// ok accepts, and returns them.
func (b *controlBundle) workers(t *testing.T, pool string, n int, ok func(wire.WorkerInfo) bool) []wire.WorkerInfo {
	t.Helper()
	var ws []wire.WorkerInfo
	require.Eventually(t, func() bool {
		ws = ws[:0]
		for _, w := range b.a.Heartbeat().Workers {
			if w.Pool == pool && w.PID != 0 && broker.WorkerState(w.State) == broker.WorkerReady && (ok == nil || ok(w)) {
				ws = append(ws, w)
			}
		}
		return len(ws) == n && len(b.a.Heartbeat().Workers) >= n
	}, waitLimit, 5*time.Millisecond, "want %d workers in pool %s", n, pool)
	return ws
}

func (b *controlBundle) poolState(pool string) broker.PoolState {
	for _, p := range b.a.Heartbeat().Pools {
		if p.Name == pool {
			return broker.PoolState(p.State)
		}
	}
	return ""
}

// event waits for an event of pool and kind announced on NATS.
func (b *controlBundle) event(t *testing.T, pool, kind string) wire.Event {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		b.mu.Lock()
		for _, e := range b.events {
			if e.Pool == pool && e.Kind == kind {
				b.mu.Unlock()
				return e
			}
		}
		arrived := b.arrived
		b.mu.Unlock()
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("no %s event of pool %s", kind, pool)
		}
	}
}

func TestAgent_Commands(t *testing.T) {
	t.Parallel()
	v2 := []string{"/bin/sh", "-c", "echo v2 $$; exec sleep 600"}
	web := service("web", 1, "v1")
	web.Upgrades = [][]string{v2, {"/no/such/program"}}
	b := setupAgent(t, Config{Pools: []broker.Spec{web}})
	first := b.workers(t, "web", 1, nil)

	for _, tc := range []struct {
		cmd  wire.Command
		want string
	}{
		{wire.Command{Op: "resize", Pool: "nope", Count: 1}, `no pool "nope" on host h1`},
		{wire.Command{Op: "explode", Pool: "web"}, `unknown command "explode"`},
		{wire.Command{Op: "resize", Pool: "web", Count: -1}, "resize: count -1 is negative"},
		{wire.Command{Op: "upgrade", Pool: "web"}, `upgrade refused by host h1: command "" is not one this host allows for pool web`},
		{wire.Command{Op: "upgrade", Pool: "web", Cmd: []string{"/no/such/program"}}, "upgrade: exec: \"/no/such/program\""},
	} {
		r := b.send(t, tc.cmd)
		require.False(t, r.OK, "%+v", tc.cmd)
		require.Contains(t, r.Error, tc.want)
		require.Equal(t, "h1", r.Host)
	}

	require.Equal(t, wire.CommandReply{Host: "h1", Pool: "web", OK: true}, b.send(t, wire.Command{Op: "resize", Pool: "web", Count: 3}))
	ws := b.workers(t, "web", 3, nil)
	require.Equal(t, first[0].PID, ws[0].PID)
	require.Equal(t, 3, b.event(t, "web", wire.EventPoolResized).Count)

	require.True(t, b.send(t, wire.Command{Op: "drain", Pool: "web", Timeout: wire.Duration(time.Second)}).OK)
	b.event(t, "web", wire.EventPoolDrained)
	require.Equal(t, broker.PoolDrained, b.poolState("web"))
	require.Empty(t, b.a.Heartbeat().Workers)

	require.True(t, b.send(t, wire.Command{Op: "resume", Pool: "web"}).OK)
	b.workers(t, "web", 3, nil)

	require.True(t, b.send(t, wire.Command{Op: "upgrade", Pool: "web", Cmd: v2, Health: wire.Duration(50 * time.Millisecond)}).OK)
	b.workers(t, "web", 3, func(w wire.WorkerInfo) bool { return w.Version == 2 })
	b.event(t, "web", wire.EventPoolUpgraded)

	require.True(t, b.send(t, wire.Command{Op: "recycle", Pool: "web"}).OK)
	b.event(t, "web", wire.EventPoolRecycled)

	require.Equal(t, wire.ReasonStop, b.event(t, "web", wire.EventWorkerExit).Reason, "the first exit was the drain's")
	require.True(t, b.send(t, wire.Command{Op: "shutdown", Pool: "web", Timeout: wire.Duration(time.Second)}).OK)
	b.event(t, "web", wire.EventPoolStopped)
	// The pool sets its state before it announces the stop.
	require.Equal(t, broker.PoolStopped, b.poolState("web"))
	r := b.send(t, wire.Command{Op: "resume", Pool: "web"})
	require.False(t, r.OK)
}

func TestAgent_Logs(t *testing.T) {
	t.Parallel()
	flood := broker.Spec{
		Name: "flood", Protocol: broker.ProtocolNone, KillTimeout: time.Second,
		// 3000 lines at once, then, once workerd has read them (at most
		// readFactor times the rate: 1.5s), one more.
		Cmd: []string{"/bin/sh", "-c", `i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; sleep 3; echo last; exec sleep 600`},
	}
	b := setupAgent(t, Config{Pools: []broker.Spec{flood, service("quiet", 1, "hello")}, LogRate: 100})
	w := b.workers(t, "quiet", 1, nil)[0]
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, l := range b.lines {
			if l.Pool == "flood" && l.Line == "last" {
				return true
			}
		}
		return false
	}, waitLimit, 5*time.Millisecond, "the line after the flood passes")
	b.mu.Lock()
	lines := append([]wire.LogLine(nil), b.lines...)
	b.mu.Unlock()
	var flooded int
	var hello wire.LogLine
	for _, l := range lines {
		switch l.Pool {
		case "flood":
			flooded++
		case "quiet":
			hello = l
		}
	}
	require.Less(t, flooded, 500, "the flood was not limited")
	require.Positive(t, countDropped(lines, "flood"), "the lines that pass count what was dropped before them")
	require.Equal(t, 3001, flooded+countDropped(lines, "flood"))
	require.Equal(t, wire.LogLine{Time: hello.Time, Host: "h1", Pool: "quiet", PID: w.PID, Stream: "stdout", Line: "hello " + strconv.Itoa(w.PID)}, hello)
}

func countDropped(lines []wire.LogLine, pool string) int {
	n := 0
	for _, l := range lines {
		if l.Pool == pool {
			n += l.Dropped
		}
	}
	return n
}

func TestAgent_CommandToAllPools(t *testing.T) {
	t.Parallel()
	b := setupAgent(t, Config{Pools: []broker.Spec{service("one", 1, "a"), service("two", 2, "b")}})
	b.workers(t, "one", 1, nil)
	b.workers(t, "two", 2, nil)
	require.Equal(t, wire.CommandReply{Host: "h1", Pool: "*", OK: true}, b.send(t, wire.Command{Op: "recycle", Pool: wire.AllPools}))
	b.event(t, "one", wire.EventPoolRecycled)
	b.event(t, "two", wire.EventPoolRecycled)
	r := b.send(t, wire.Command{Op: "resize", Pool: wire.AllPools, Count: 3})
	require.False(t, r.OK)
	require.Equal(t, "resize goes to one pool at a time, not to all", r.Error)
	require.True(t, b.send(t, wire.Command{Op: "drain", Pool: wire.AllPools}).OK)
	b.event(t, "one", wire.EventPoolDrained)
	b.event(t, "two", wire.EventPoolDrained)
}

func TestAgent_PoolThatCannotStart(t *testing.T) {
	t.Parallel()
	bad := service("bad", 1, "x")
	bad.Cmd = []string{"/no/such/server"}
	b := setupAgent(t, Config{Pools: []broker.Spec{bad, service("good", 1, "ok")}})
	b.workers(t, "good", 1, nil)
	require.Eventually(t, func() bool { return b.poolState("bad") == broker.PoolFailed }, waitLimit, 5*time.Millisecond)
	for _, p := range b.a.Heartbeat().Pools {
		if p.Name == "bad" {
			require.Contains(t, p.Error, `broker: start pool "bad": command "/no/such/server"`)
		}
	}
}

func TestAgent_Reload(t *testing.T) {
	t.Parallel()
	b := setupAgent(t, Config{Pools: []broker.Spec{service("keep", 1, "k1"), service("drop", 1, "d")}})
	keep := b.workers(t, "keep", 1, nil)
	drop := b.workers(t, "drop", 1, nil)

	changed := service("keep", 2, "k2")
	require.NoError(t, b.a.Reload(context.Background(), []broker.Spec{changed, service("new", 1, "n")}))
	ws := b.workers(t, "keep", 2, func(w wire.WorkerInfo) bool { return w.Version == 2 })
	require.NotEqual(t, keep[0].PID, ws[0].PID)
	b.workers(t, "new", 1, nil)
	require.Empty(t, b.poolState("drop"))
	require.ErrorIs(t, syscall.Kill(drop[0].PID, 0), syscall.ESRCH, "the dropped pool's worker is gone")

	err := b.a.Reload(context.Background(), []broker.Spec{changed, changed})
	require.ErrorContains(t, err, `two pools named "keep"`)
}
