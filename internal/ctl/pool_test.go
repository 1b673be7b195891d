package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// liveBundle is a real conductor (token "tok") with its HTTP API, and a
// NATS connection to it for the fake hosts.
type liveBundle struct {
	srv   *httptest.Server
	nc    *nats.Conn
	space subject.Space
}

func setupLive(t *testing.T) *liveBundle {
	t.Helper()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", Token: "tok", MemoryStorage: true})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	nc, err := nats.Connect(c.NATSURL(), nats.Token("tok"))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	space, err := subject.New("default")
	require.NoError(t, err)
	return &liveBundle{srv: srv, nc: nc, space: space}
}

// startHost plays the workerd of host id: heartbeats announcing pools every
// 100ms, and an answer to every command on its control subject (refusing
// with reason, if set). It returns the commands the host receives.
func (b *liveBundle) startHost(t *testing.T, id, reason string, pools ...string) <-chan wire.Command {
	t.Helper()
	got := make(chan wire.Command, 100)
	sub, err := b.nc.Subscribe(b.space.Control(id), func(m *nats.Msg) {
		var cmd wire.Command
		if json.Unmarshal(m.Data, &cmd) != nil {
			return
		}
		got <- cmd
		data, _ := json.Marshal(wire.CommandReply{Host: id, Pool: cmd.Pool, OK: reason == "", Error: reason})
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	hb := wire.Heartbeat{Host: id, Interval: wire.Duration(time.Second)}
	for _, p := range pools {
		hb.Pools = append(hb.Pools, wire.PoolInfo{Name: p, Count: 1, Protocol: "channel", State: "running"})
	}
	data, err := json.Marshal(hb)
	require.NoError(t, err)
	require.NoError(t, b.nc.Publish(b.space.Host(id), data))
	require.NoError(t, b.nc.Flush())
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				_ = b.nc.Publish(b.space.Host(id), data)
			}
		}
	})
	t.Cleanup(func() {
		close(quit)
		wg.Wait()
	})
	return got
}

func nextCommand(t *testing.T, got <-chan wire.Command) wire.Command {
	t.Helper()
	select {
	case cmd := <-got:
		return cmd
	case <-time.After(10 * time.Second):
		t.Fatal("no command within 10s")
		return wire.Command{}
	}
}

func TestRun_PoolCommands(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	a := b.startHost(t, "a", "", "squares")
	bb := b.startHost(t, "b", "", "squares")

	for _, tc := range []struct {
		args []string
		want wire.Command
	}{
		{[]string{"drain", "squares"}, wire.Command{Op: "drain"}},
		{[]string{"drain", "squares", "--timeout", "1m"}, wire.Command{Op: "drain", Timeout: wire.Duration(time.Minute)}},
		{[]string{"resume", "squares"}, wire.Command{Op: "resume"}},
		{[]string{"recycle", "squares"}, wire.Command{Op: "recycle"}},
		{[]string{"restart", "squares"}, wire.Command{Op: "restart"}},
		{[]string{"restart", "--timeout", "5s", "squares"}, wire.Command{Op: "restart", Timeout: wire.Duration(5 * time.Second)}},
		{[]string{"resize", "squares", "3"}, wire.Command{Op: "resize", Count: 3}},
		{[]string{"upgrade", "squares", "--health", "10s", "--", "./w", "--x", "a b"},
			wire.Command{Op: "upgrade", Cmd: []string{"./w", "--x", "a b"}, Health: wire.Duration(10 * time.Second)}},
		{[]string{"upgrade", "squares", "./w --x 'a b'"}, wire.Command{Op: "upgrade", Cmd: []string{"./w", "--x", "a b"}}},
		{[]string{"upgrade", "squares", "--", "./w --x"}, wire.Command{Op: "upgrade", Cmd: []string{"./w", "--x"}}},
		{[]string{"shutdown", "squares", "--timeout", "30s"}, wire.Command{Op: "shutdown", Timeout: wire.Duration(30 * time.Second)}},
	} {
		out, err := runLive(t, b, tc.args...)
		require.NoError(t, err, "%v", tc.args)
		require.Equal(t, "HOST  RESULT\na     accepted\nb     accepted\n", out, "%v", tc.args)
		tc.want.Pool = "squares"
		require.Equal(t, tc.want, nextCommand(t, a), "%v", tc.args)
		require.Equal(t, tc.want, nextCommand(t, bb), "%v", tc.args)
	}

	out, err := runLive(t, b, "resize", "squares", "--host", "b", "0")
	require.NoError(t, err)
	require.Equal(t, "HOST  RESULT\nb     accepted\n", out)
	require.Equal(t, wire.Command{Op: "resize", Pool: "squares"}, nextCommand(t, bb))
	require.Empty(t, a)
}

func TestRun_PoolCommandRefused(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	b.startHost(t, "a", "pool squares is stopped", "squares", "lonely")
	b.startHost(t, "b", "", "squares")

	out, err := runLive(t, b, "recycle", "squares")
	var exit *ExitError
	require.True(t, errors.As(err, &exit), "%v", err)
	require.Equal(t, 4, exit.Code)
	require.Equal(t, "recycle of pool squares: 1 of 2 hosts refused", exit.Msg)
	require.Equal(t, "HOST  RESULT\na     refused: pool squares is stopped\nb     accepted\n", out)

	out, err = runLive(t, b, "drain", "lonely")
	require.True(t, errors.As(err, &exit), "%v", err)
	require.Equal(t, 4, exit.Code)
	require.Equal(t, `conductor: command refused: drain of pool "lonely": a: pool squares is stopped`, exit.Msg)
	require.Equal(t, "HOST  RESULT\na     refused: pool squares is stopped\n", out)

	_, err = runLive(t, b, "restart", "ghost")
	require.ErrorContains(t, err, `no live host runs pool "ghost" (404 Not Found)`)
	_, err = runLive(t, b, "restart", "squares", "--host", "c")
	require.ErrorContains(t, err, `host "c" is not live or does not run pool "squares" (404 Not Found)`)
	_, err = runLive(t, b, "shutdown", "squares", "--timeout", "-1s")
	require.ErrorContains(t, err, `bad timeout "-1s"`)
	require.ErrorContains(t, err, "(400 Bad Request)")
}

func TestRun_PoolCommandUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drain"}, "usage: conductorctl drain POOL"},
		{[]string{"drain", "a", "b"}, "usage: conductorctl drain POOL"},
		{[]string{"resume", "a", "--", "x"}, "usage: conductorctl resume POOL"},
		{[]string{"resize", "squares"}, "usage: conductorctl resize POOL N"},
		{[]string{"resize", "squares", "many"}, `N must be a number of workers, 0 or more, not "many"`},
		{[]string{"resize", "squares", "-1"}, "unknown shorthand flag: '1' in -1"},
		{[]string{"upgrade", "squares"}, "upgrade: no command line; usage: conductorctl upgrade POOL"},
		{[]string{"upgrade", "squares", "./w", "-v"}, "unknown shorthand flag: 'v' in -v"},
		{[]string{"upgrade", "squares", "./w", "--", "x"}, "give CMD either after -- or as one string"},
		{[]string{"recycle", "squares", "--timeout", "1s"}, "unknown flag: --timeout"},
	} {
		var out, errOut bytes.Buffer
		err := Run(context.Background(), append([]string{"--server", "http://127.0.0.1:1"}, tc.args...), &out, &errOut)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
		require.Empty(t, out.String())
	}
}

// runLive runs conductorctl against b's conductor.
func runLive(t *testing.T, b *liveBundle, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := Run(context.Background(), append([]string{"--server", b.srv.URL, "--token", "tok"}, args...), &out, &errOut)
	return out.String(), err
}
