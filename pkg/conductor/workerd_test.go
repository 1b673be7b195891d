package conductor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestConductor_PoolCommandsWithWorkerd drives a real workerd agent, whose
// workers are this test binary (see TestMain), through the HTTP API and
// follows it on the event stream.
func TestConductor_PoolCommandsWithWorkerd(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	startAgent(t, bundle, "squares")
	resp, stream := openStream(t, srv.URL, "?pool=squares")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	waitPoolState(t, c, "running", 1)

	code, body := post(t, srv, "/v1/pools/squares/resize", `{"count":2}`)
	require.Equal(t, http.StatusAccepted, code, body)
	require.JSONEq(t, `{"pool":"squares","op":"resize","hosts":[{"host":"h1","ok":true}]}`, body)
	e := waitEvent(t, stream, client.ScopePool, client.EventPoolResized)
	require.Equal(t, 2, e.Count)
	waitPoolState(t, c, "running", 2)

	code, body = post(t, srv, "/v1/pools/squares/drain?host=h1", `{"timeout":"5s"}`)
	require.Equal(t, http.StatusAccepted, code, body)
	waitEvent(t, stream, client.ScopePool, client.EventPoolDrained)
	waitPoolState(t, c, "drained", 0)

	code, body = post(t, srv, "/v1/pools/squares/resume", "")
	require.Equal(t, http.StatusAccepted, code, body)
	waitEvent(t, stream, client.ScopePool, client.EventPoolResumed)
	waitPoolState(t, c, "running", 2)
}

// startAgent starts a workerd agent, host h1, with one worker per pool
// named; the workers are this test binary (see TestMain). It stops with
// the test.
func startAgent(t *testing.T, bundle *testBundle, pools ...string) {
	t.Helper()
	startAgentN(t, bundle, 1, pools...)
}

// startAgentN starts an agent whose pools have n workers each.
func startAgentN(t *testing.T, bundle *testBundle, n int, pools ...string) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	var specs []broker.Spec
	for _, name := range pools {
		specs = append(specs, broker.Spec{Name: name, Count: n, Cmd: []string{self}})
	}
	a, err := agent.New(agent.Config{
		Conn: bundle.nc, Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Pools: specs,
	})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
}

// waitEvent reads stream until an event of scope and kind comes.
func waitEvent(t *testing.T, stream *bufio.Reader, scope, kind string) client.Event {
	t.Helper()
	for {
		var e client.Event
		require.NoError(t, json.Unmarshal([]byte(nextData(t, stream)), &e))
		t.Logf("event: %+v", e)
		if e.Scope == scope && e.Kind == kind {
			return e
		}
	}
}

// waitPoolState waits until GET /v1/pools shows pool squares in state with
// workers worker processes.
func waitPoolState(t *testing.T, c *conductor.Conductor, state string, workers int) {
	t.Helper()
	require.Eventually(t, func() bool {
		pools, err := c.Pools(context.Background())
		require.NoError(t, err)
		for _, p := range pools {
			if p.Type == "squares" {
				return p.State == state && p.Workers == workers
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "pool squares %s with %d workers", state, workers)
}

// TestConductor_FailingPoolReason runs a real workerd agent whose command
// exits 127 at once: GET /v1/pools shows the pool failed with the reason
// (the default crash-loop breaker's verdict, the exit, its stderr line and
// the retry time) and no worker process, and GET /v1/workers shows every
// slot in backoff with its reason.
func TestConductor_FailingPoolReason(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)
	a, err := agent.New(agent.Config{
		Conn: bundle.nc, Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Pools: []broker.Spec{{
			Name: "broken", Count: 2,
			Cmd:          []string{"/bin/sh", "-c", `echo "no such file" >&2; exit 127`},
			RestartDelay: time.Millisecond, RestartMaxDelay: 10 * time.Millisecond,
		}},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)

	var pool client.Pool
	require.Eventually(t, func() bool {
		pools, err := c.Pools(context.Background())
		require.NoError(t, err)
		for _, p := range pools {
			if p.Type == "broken" {
				pool = p
				return p.State == "failed"
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "pool broken not failed")
	require.Zero(t, pool.Workers, "slots in backoff have no process")
	require.Contains(t, pool.Reason, `h1: crash loop: 5 failed starts within 10s; last exit 127 "no such file"`)
	require.Len(t, pool.Hosts, 1)
	require.Contains(t, pool.Hosts[0].Reason, "retry at ")

	code, body := get(t, srv, "/v1/workers")
	require.Equal(t, http.StatusOK, code, body)
	var workers []client.Worker
	require.NoError(t, json.Unmarshal([]byte(body), &workers))
	require.Len(t, workers, 2)
	for _, w := range workers {
		require.Contains(t, []string{"backoff", "exited", "starting"}, w.State)
		require.Contains(t, w.Reason, `exit 127 "no such file"`)
	}
	code, body = get(t, srv, "/v1/hosts")
	require.Equal(t, http.StatusOK, code, body)
	var hosts []client.Host
	require.NoError(t, json.Unmarshal([]byte(body), &hosts))
	require.Len(t, hosts, 1)
	require.Equal(t, "h1", hosts[0].Host)
	require.Len(t, hosts[0].Workers, 2)
	require.Equal(t, "broken", hosts[0].Pools[0].Name)
	rec := httptest.NewRecorder()
	metrics.Handler(metrics.Source{Pools: c.Pools, Workers: c.Workers}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body = rec.Body.String()
	require.Contains(t, body, `conductor_pool_state{state="failed",type="broken"} 1`)
	require.Contains(t, body, `conductor_pool_workers{type="broken"} 0`)
}
