package conductor_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// fakeHost plays the workerd of one host over real NATS: it announces its
// pools in a heartbeat every 100ms and answers the commands on its control
// subject. commands receives every command it was sent, in order.
type fakeHost struct {
	id       string
	commands chan wire.Command
}

type fakeHostConfig struct {
	id    string
	pools []wire.PoolInfo
	// answer makes the reply to a command; nil answers nothing. Default:
	// accept every command.
	answer func(wire.Command) *wire.CommandReply
	// deaf hosts do not subscribe to their control subject at all.
	deaf bool
}

// startFakeHost starts a fake host on nc; it stops at the end of the test.
func startFakeHost(t *testing.T, nc *nats.Conn, cfg fakeHostConfig) *fakeHost {
	t.Helper()
	space, err := subject.New("default")
	require.NoError(t, err)
	if cfg.answer == nil {
		cfg.answer = func(cmd wire.Command) *wire.CommandReply {
			return &wire.CommandReply{Host: cfg.id, Pool: cmd.Pool, OK: true}
		}
	}
	h := &fakeHost{id: cfg.id, commands: make(chan wire.Command, 100)}
	if !cfg.deaf {
		sub, err := nc.Subscribe(space.Control(cfg.id), func(m *nats.Msg) {
			var cmd wire.Command
			if json.Unmarshal(m.Data, &cmd) != nil {
				return
			}
			h.commands <- cmd
			if reply := cfg.answer(cmd); reply != nil {
				data, _ := json.Marshal(reply)
				_ = m.Respond(data)
			}
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	hb, err := json.Marshal(wire.Heartbeat{
		Host: cfg.id, Interval: wire.Duration(time.Second), Pools: cfg.pools, Workers: []wire.WorkerInfo{},
	})
	require.NoError(t, err)
	require.NoError(t, nc.Publish(space.Host(cfg.id), hb))
	require.NoError(t, nc.Flush())
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
				_ = nc.Publish(space.Host(cfg.id), hb)
			}
		}
	})
	t.Cleanup(func() {
		close(quit)
		wg.Wait()
	})
	return h
}

// next returns the next command h received.
func (h *fakeHost) next(t *testing.T) wire.Command {
	t.Helper()
	select {
	case cmd := <-h.commands:
		return cmd
	case <-time.After(10 * time.Second):
		t.Fatalf("host %s received no command", h.id)
		return wire.Command{}
	}
}

// running returns the pool infos of running pools named names.
func running(names ...string) []wire.PoolInfo {
	out := make([]wire.PoolInfo, len(names))
	for i, n := range names {
		out[i] = wire.PoolInfo{Name: n, Count: 2, Protocol: "channel", State: "running"}
	}
	return out
}

// refuse answers every command with a refusal for reason.
func refuse(id, reason string) func(wire.Command) *wire.CommandReply {
	return func(cmd wire.Command) *wire.CommandReply {
		return &wire.CommandReply{Host: id, Pool: cmd.Pool, Error: reason}
	}
}

// serve serves c's HTTP API for the test.
func serve(t *testing.T, c *conductor.Conductor) *httptest.Server {
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// post posts body to srv's path and returns the status and the answer.
func post(t *testing.T, srv *httptest.Server, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	return readAnswer(t, resp)
}

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	require.NoError(t, err)
	return readAnswer(t, resp)
}

func readAnswer(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(raw)
}

func TestConductor_PoolCommands(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	a := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares", "other")})
	b := startFakeHost(t, bundle.nc, fakeHostConfig{id: "b", pools: running("squares")})
	other := startFakeHost(t, bundle.nc, fakeHostConfig{id: "c", pools: running("other")})

	for _, tc := range []struct {
		op, body string
		want     wire.Command
	}{
		{"drain", "", wire.Command{Op: "drain"}},
		{"drain", `{"timeout":"1m"}`, wire.Command{Op: "drain", Timeout: wire.Duration(time.Minute)}},
		{"resume", "", wire.Command{Op: "resume"}},
		{"recycle", "{}", wire.Command{Op: "recycle"}},
		{"restart", "", wire.Command{Op: "restart"}},
		{"restart", `{"timeout":"5s"}`, wire.Command{Op: "restart", Timeout: wire.Duration(5 * time.Second)}},
		{"resize", `{"count":3}`, wire.Command{Op: "resize", Count: 3}},
		{"resize", `{"count":0}`, wire.Command{Op: "resize"}},
		{"upgrade", `{"cmd":["./w","--x","a b"],"health":"10s"}`,
			wire.Command{Op: "upgrade", Cmd: []string{"./w", "--x", "a b"}, Health: wire.Duration(10 * time.Second)}},
		{"upgrade", `{"cmd":"./w --x 'a b'"}`, wire.Command{Op: "upgrade", Cmd: []string{"./w", "--x", "a b"}}},
		{"shutdown", `{"timeout":"30s"}`, wire.Command{Op: "shutdown", Timeout: wire.Duration(30 * time.Second)}},
		{"shutdown", "", wire.Command{Op: "shutdown"}},
	} {
		t.Run(tc.op+" "+tc.body, func(t *testing.T) {
			code, body := post(t, srv, "/v1/pools/squares/"+tc.op, tc.body)
			require.Equal(t, http.StatusAccepted, code, body)
			require.JSONEq(t, `{"pool":"squares","op":"`+tc.op+`","hosts":[{"host":"a","ok":true},{"host":"b","ok":true}]}`, body)
			tc.want.Pool = "squares"
			require.Equal(t, tc.want, a.next(t))
			require.Equal(t, tc.want, b.next(t))
		})
	}
	require.Empty(t, other.commands, "a host that does not run the pool gets nothing")
}

func TestConductor_PoolCommandOneHost(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	a := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})
	b := startFakeHost(t, bundle.nc, fakeHostConfig{id: "b", pools: running("squares")})
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "c", pools: running("other")})

	code, body := post(t, srv, "/v1/pools/squares/resize?host=b", `{"count":5}`)
	require.Equal(t, http.StatusAccepted, code, body)
	require.JSONEq(t, `{"pool":"squares","op":"resize","hosts":[{"host":"b","ok":true}]}`, body)
	require.Equal(t, wire.Command{Op: "resize", Pool: "squares", Count: 5}, b.next(t))

	code, body = post(t, srv, "/v1/pools/squares/drain?host=c", "")
	require.Equal(t, http.StatusNotFound, code)
	require.JSONEq(t, `{"error":"conductor: pool not found: host \"c\" is not live or does not run pool \"squares\""}`, body)
	code, _ = post(t, srv, "/v1/pools/squares/drain?host=nobody", "")
	require.Equal(t, http.StatusNotFound, code)
	code, body = post(t, srv, "/v1/pools/squares/drain?host=bad.host", "")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `host id \"bad.host\" has '.'`)
	require.Empty(t, a.commands)
	require.Empty(t, b.commands)
}

func TestConductor_PoolCommandAllPools(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	a := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares", "other")})
	b := startFakeHost(t, bundle.nc, fakeHostConfig{id: "b", pools: running("web")})

	code, body := post(t, srv, "/v1/pools/*/recycle", "")
	require.Equal(t, http.StatusAccepted, code, body)
	require.JSONEq(t, `{"pool":"*","op":"recycle","hosts":[{"host":"a","ok":true},{"host":"b","ok":true}]}`, body)
	require.Equal(t, wire.Command{Op: "recycle", Pool: "*"}, a.next(t))
	require.Equal(t, wire.Command{Op: "recycle", Pool: "*"}, b.next(t))

	code, body = post(t, srv, "/v1/pools/*/drain?host=b", `{"timeout":"2s"}`)
	require.Equal(t, http.StatusAccepted, code, body)
	require.Equal(t, wire.Command{Op: "drain", Pool: "*", Timeout: wire.Duration(2 * time.Second)}, b.next(t))

	code, body = post(t, srv, "/v1/pools/*/resize", `{"count":2}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `resize goes to one pool at a time, not to all (\"*\")`)
	require.Empty(t, a.commands)
}

func TestConductor_PoolCommandBadRequest(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	a := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})

	for _, tc := range []struct{ path, body, want string }{
		{"squares/resize", `{"count":-1}`, "count must be 0 or more, not -1"},
		{"squares/resize", ``, `resize needs a body {\"count\":N}`},
		{"squares/resize", `{"count":"3"}`, "bad body: json: cannot unmarshal string"},
		{"squares/drain", `{"count":3}`, "drain takes no count (it takes timeout)"},
		{"squares/resume", `{"timeout":"1s"}`, "resume takes no timeout (it takes no fields)"},
		{"squares/drain", `{"bogus":1}`, `bad body: json: unknown field \"bogus\"`},
		{"squares/upgrade", `{"cmd":""}`, "upgrade needs a command line"},
		{"squares/upgrade", `{"cmd":[]}`, "upgrade needs a command line"},
		{"squares/upgrade", `{"health":"1s"}`, "upgrade needs a body"},
		{"squares/upgrade", `{"cmd":5}`, "bad cmd: want an array of strings"},
		{"squares/upgrade", `{"cmd":"w 'a"}`, `bad cmd \"w 'a\": Unterminated single-quoted string`},
		{"squares/upgrade", `{"cmd":"w","health":"soon"}`, `bad health \"soon\": want a duration such as 10s`},
		{"squares/shutdown", `{"timeout":"-1s"}`, `bad timeout \"-1s\"`},
		{"squares/drain", `{} {}`, "bad body: want one JSON object"},
		{"squares/drain", `nope`, "bad body: invalid character"},
		{"bad.pool/drain", ``, `pool \"bad.pool\" has '.'`},
		{"squares/upgrade", `{"cmd":"` + strings.Repeat("x", 70<<10) + `"}`, "bad body: http: request body too large"},
	} {
		code, body := post(t, srv, "/v1/pools/"+tc.path, tc.body)
		require.Equal(t, http.StatusBadRequest, code, "%s %s: %s", tc.path, tc.body, body)
		require.Contains(t, body, tc.want, "%s %s", tc.path, tc.body)
	}
	require.Empty(t, a.commands, "a bad command reaches no host")
}

func TestConductor_PoolCommandNoHost(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})

	code, body := post(t, srv, "/v1/pools/ghost/recycle", "")
	require.Equal(t, http.StatusNotFound, code)
	require.JSONEq(t, `{"error":"conductor: pool not found: no live host runs pool \"ghost\""}`, body)
}

func TestConductor_PoolCommandRefused(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares"), answer: refuse("a", "pool squares is stopped")})
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "b", pools: running("squares", "lonely")})
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "r", pools: running("lonely"), answer: refuse("r", "no")})
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "d", pools: running("lonely"), deaf: true})
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "e", pools: running("lonely"), answer: func(cmd wire.Command) *wire.CommandReply {
		return &wire.CommandReply{Host: "e", Pool: cmd.Pool}
	}})

	code, body := post(t, srv, "/v1/pools/squares/restart", "")
	require.Equal(t, http.StatusAccepted, code, "one host accepted")
	require.JSONEq(t, `{"pool":"squares","op":"restart","hosts":[
		{"host":"a","ok":false,"error":"pool squares is stopped"},{"host":"b","ok":true}]}`, body)

	code, body = post(t, srv, "/v1/pools/lonely/recycle?host=r", "")
	require.Equal(t, http.StatusBadGateway, code)
	require.JSONEq(t, `{"pool":"lonely","op":"recycle","hosts":[{"host":"r","ok":false,"error":"no"}],
		"error":"conductor: command refused: recycle of pool \"lonely\": r: no"}`, body)

	code, body = post(t, srv, "/v1/pools/lonely/recycle?host=d", "")
	require.Equal(t, http.StatusBadGateway, code)
	require.JSONEq(t, `{"pool":"lonely","op":"recycle","hosts":[{"host":"d","ok":false,"error":"workerd does not listen for commands"}],
		"error":"conductor: command refused: recycle of pool \"lonely\": d: workerd does not listen for commands"}`, body)

	code, body = post(t, srv, "/v1/pools/lonely/recycle?host=e", "")
	require.Equal(t, http.StatusBadGateway, code)
	require.Contains(t, body, `"error":"refused without a reason"`)
}

func TestClient_Command(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	cl, err := client.New(conn(t, c), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	impatient, err := client.New(conn(t, c), client.Config{CommandTimeout: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(impatient.Close)
	a := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})
	b := startFakeHost(t, bundle.nc, fakeHostConfig{id: "b", pools: running("squares", "slow")})
	mute := startFakeHost(t, bundle.nc, fakeHostConfig{id: "m", pools: running("slow"), answer: func(wire.Command) *wire.CommandReply { return nil }})
	ctx := context.Background()

	res, err := cl.Command(ctx, "squares", client.PoolCommand{
		Op: client.OpUpgrade, Cmd: []string{"./w", "-v"}, Health: 5 * time.Second,
	}, "")
	require.NoError(t, err)
	require.Equal(t, []client.CommandResult{{Host: "a", OK: true}, {Host: "b", OK: true}}, res)
	want := wire.Command{Op: "upgrade", Pool: "squares", Cmd: []string{"./w", "-v"}, Health: wire.Duration(5 * time.Second)}
	require.Equal(t, want, a.next(t))
	require.Equal(t, want, b.next(t))

	res, err = cl.Command(ctx, "squares", client.PoolCommand{Op: client.OpShutdown, Timeout: time.Second}, "a")
	require.NoError(t, err)
	require.Equal(t, []client.CommandResult{{Host: "a", OK: true}}, res)
	require.Equal(t, wire.Command{Op: "shutdown", Pool: "squares", Timeout: wire.Duration(time.Second)}, a.next(t))

	res, err = impatient.Command(ctx, "slow", client.PoolCommand{Op: client.OpDrain}, "m")
	require.ErrorIs(t, err, client.ErrCommandRefused)
	require.Equal(t, []client.CommandResult{{Host: "m", Error: "no answer within 200ms"}}, res)
	require.Equal(t, wire.Command{Op: "drain", Pool: "slow"}, mute.next(t))

	_, err = cl.Command(ctx, "squares", client.PoolCommand{Op: client.OpDrain}, "m")
	require.ErrorIs(t, err, client.ErrPoolNotFound)
	_, err = cl.Command(ctx, "ghost", client.PoolCommand{Op: client.OpDrain}, "")
	require.ErrorIs(t, err, client.ErrPoolNotFound)

	for _, bad := range []client.PoolCommand{
		{Op: "explode"},
		{Op: client.OpDrain, Count: 1},
		{Op: client.OpResize, Count: -1},
		{Op: client.OpUpgrade},
		{Op: client.OpUpgrade, Cmd: []string{""}},
		{Op: client.OpUpgrade, Cmd: []string{"w"}, Health: -time.Second},
		{Op: client.OpShutdown, Timeout: -time.Second},
		{Op: client.OpRecycle, Cmd: []string{"w"}},
	} {
		_, err := cl.Command(ctx, "squares", bad, "")
		require.ErrorIs(t, err, client.ErrBadCommand, "%+v", bad)
	}
	_, err = cl.Command(ctx, "bad.pool", client.PoolCommand{Op: client.OpDrain}, "")
	require.ErrorIs(t, err, subject.ErrBadToken)
	require.Empty(t, a.commands)
	require.Empty(t, b.commands)
}

func TestConductor_PoolsState(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	retry := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	info := func(name, state string) wire.PoolInfo {
		return wire.PoolInfo{Name: name, Count: 1, Protocol: "none", State: state}
	}
	failed := info("p-failed", "failed")
	failed.RetryAt, failed.Error = retry, "5 exits within 1m0s"
	upgrading := info("p-running", "running")
	upgrading.Operation, upgrading.Cmd = "upgrade", []string{"./w", "-v2"}
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: []wire.PoolInfo{
		info("p-running", "running"), info("p-failed", "running"), info("p-drained", "drained"),
		info("p-draining", "draining"), info("p-mixed", "drained"), info("p-stopped", "stopped"),
	}})
	startFakeHost(t, bundle.nc, fakeHostConfig{id: "b", pools: []wire.PoolInfo{
		upgrading, failed, info("p-drained", "drained"),
		info("p-draining", "drained"), info("p-mixed", "running"), info("p-stopped", "stopped"),
	}})

	var pools []client.Pool
	require.Eventually(t, func() bool {
		var err error
		pools, err = c.Pools(context.Background())
		require.NoError(t, err)
		return len(pools) == 6 && len(pools[0].Hosts) == 2 && len(pools[5].Hosts) == 2
	}, 10*time.Second, 10*time.Millisecond, "both hosts' heartbeats")

	states := map[string]string{}
	for _, p := range pools {
		states[p.Type] = p.State
	}
	require.Equal(t, map[string]string{
		"p-running": "running", "p-failed": "failed", "p-drained": "drained",
		"p-draining": "draining", "p-mixed": "running", "p-stopped": "stopped",
	}, states)
	require.Equal(t, client.Pool{Type: "p-failed", State: "failed", Hosts: []client.PoolHost{
		{Host: "a", State: "running", Count: 1},
		{Host: "b", State: "failed", Count: 1, RetryAt: retry, Error: "5 exits within 1m0s"},
	}}, pools[2])

	srv := serve(t, c)
	resp, err := http.Get(srv.URL + "/v1/pools")
	require.NoError(t, err)
	defer resp.Body.Close()
	var raw []json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw))
	require.Len(t, raw, 6)
	require.JSONEq(t, `{"type":"p-running","queued":0,"held":0,"running":0,"succeeded":0,"failed":0,"dead":0,"workers":0,
		"state":"running","hosts":[
			{"host":"a","state":"running","count":1},
			{"host":"b","state":"running","count":1,"operation":"upgrade","cmd":["./w","-v2"]}]}`, string(raw[4]))
}
