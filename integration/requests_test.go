package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// A worker asks the conductor side (Job.Request): any NATS responder on
// the command's subject answers, and sees which worker asked; a command
// no one answers is answered "unhandled" at once; a responder's error
// comes back as the request's error, with its code.
func TestRequests_WorkerAsksTheConductorSide(t *testing.T) {
	c := newCluster(t, withArgs("--stats-interval", "500ms"))
	c.workerd("host-a", fmt.Sprintf("name=asker,count=1,cmd=%s", filepath.Join(bin, "askworker")))
	c.waitWorkers("asker", 1)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe("conductor.default.requests.echo", func(m *nats.Msg) {
		answer, _ := json.Marshal(map[string]any{
			"data": json.RawMessage(m.Data), "host": m.Header.Get("Conductor-Host"),
			"pool": m.Header.Get("Conductor-Pool"), "worker": m.Header.Get("Conductor-Worker"),
		})
		_ = m.Respond(answer)
	})
	require.NoError(t, err)
	_, err = nc.Subscribe("conductor.default.requests.refuse", func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set("Conductor-Status", "400")
		r.Data = []byte(`{"error":"no such account"}`)
		_ = m.RespondMsg(r)
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	run := func(payload string) client.Job {
		t.Helper()
		var j client.Job
		require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/asker?wait=30s", payload, nil, &j))
		return j
	}
	j := run(`{"command":"echo","data":{"n":7}}`)
	require.Equal(t, "succeeded", string(j.Status), j.Error)
	require.JSONEq(t, `{"answer":{"data":{"n":7},"host":"host-a","pool":"asker","worker":"0"}}`, string(j.Result))

	j = run(`{"command":"nobody","data":1}`)
	require.Equal(t, "succeeded", string(j.Status), j.Error)
	require.JSONEq(t, `{"unhandled":true}`, string(j.Result), "a command no one answers")

	j = run(`{"command":"refuse","data":1}`)
	require.Equal(t, "dead", string(j.Status))
	require.Contains(t, j.Error, "no such account (400)")

	j = run(`{"command":"not a token","data":1}`)
	require.Equal(t, "dead", string(j.Status))
	require.Contains(t, j.Error, "(400)")

	// Its counter shows in /v1/workers (the heartbeat carries it).
	require.Eventually(t, func() bool {
		ws := c.workers()
		return len(ws) == 1 && ws[0].Counters["asked"] == 4
	}, 10*time.Second, 50*time.Millisecond, "the worker's counter in /v1/workers: %+v", c.workers())
	// And in the roll-up (docs/stats.md).
	var st struct {
		Agg struct{ Last map[string]float64 }
		Raw []struct {
			Host string
			Last map[string]float64
		}
	}
	require.Eventually(t, func() bool {
		return c.do(http.MethodGet, "/v1/stats", "", nil, &st) == http.StatusOK && st.Agg.Last["asked"] == 4
	}, 10*time.Second, 50*time.Millisecond, "the roll-up: %+v", st)
	require.Equal(t, 4.0, st.Agg.Last["jobs_done"])
	require.Len(t, st.Raw, 1)
	require.Equal(t, "host-a", st.Raw[0].Host)
	// And as an event, to a Go client.
	events, err := c.goClient().Stats(t.Context())
	require.NoError(t, err)
	select {
	case ev := <-events:
		require.Equal(t, 4.0, ev.Agg.Last["asked"])
		require.Len(t, ev.Raw, 1)
	case <-time.After(10 * time.Second):
		t.Fatal("no stats event")
	}

	// Prometheus: the counter, and the run and wait histograms of the type.
	var metrics string
	require.Eventually(t, func() bool {
		resp, err := http.Get(c.url("/metrics"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		metrics = string(b)
		return strings.Contains(metrics, `conductor_job_run_seconds_count{type="asker"} 4`) &&
			strings.Contains(metrics, `conductor_job_queue_wait_seconds_count{type="asker"} 4`) &&
			strings.Contains(metrics, `conductor_worker_counter{counter="asked",type="asker"} 4`)
	}, 10*time.Second, 50*time.Millisecond, "/metrics:\n%s", metrics)
}

// The conductor side sends a message to one worker, and broadcasts to a
// pool on every host, or on one: each worker it reaches gets it once
// (each tells of it with a request of its own, "seen"); a message to a
// worker that is gone answers "no such worker".
func TestMessages_ToOneWorkerAndBroadcasts(t *testing.T) {
	c := newCluster(t)
	spec := func(n int) string {
		return fmt.Sprintf("name=listener,count=%d,cmd=%s", n, filepath.Join(bin, "askworker"))
	}
	c.workerd("host-a", spec(2))
	c.workerd("host-b", spec(1))
	c.waitWorkers("listener", 3)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	type seen struct {
		host, worker, data string
	}
	seenC := make(chan seen, 64)
	_, err = nc.Subscribe("conductor.default.requests.seen", func(m *nats.Msg) {
		seenC <- seen{m.Header.Get("Conductor-Host"), m.Header.Get("Conductor-Worker"), string(m.Data)}
		_ = m.Respond([]byte(`{}`))
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	collect := func(n int) map[seen]int {
		t.Helper()
		got := map[seen]int{}
		for range n {
			select {
			case s := <-seenC:
				got[s]++
			case <-time.After(20 * time.Second):
				t.Fatalf("%d of %d messages seen: %v", len(got), n, got)
			}
		}
		return got
	}
	cl := c.goClient()
	ctx := t.Context()

	results, err := cl.Broadcast(ctx, "listener", "", map[string]int{"n": 1})
	require.NoError(t, err)
	delivered := map[string]int{}
	for _, r := range results {
		require.True(t, r.OK, "%+v", r)
		delivered[r.Host] = r.Delivered
	}
	require.Equal(t, map[string]int{"host-a": 2, "host-b": 1}, delivered)
	require.Equal(t, map[seen]int{
		{"host-a", "0", `{"n":1}`}: 1, {"host-a", "1", `{"n":1}`}: 1, {"host-b", "0", `{"n":1}`}: 1,
	}, collect(3), "every worker once")

	results, err = cl.Broadcast(ctx, client.AllPools, "host-b", "only b")
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.Equal(t, 1, results[0].Delivered)
	require.Equal(t, map[seen]int{{"host-b", "0", `"only b"`}: 1}, collect(1))

	require.NoError(t, cl.SendMessage(ctx, "host-a", "listener", 1, []int{4, 2}))
	require.Equal(t, map[seen]int{{"host-a", "1", `[4,2]`}: 1}, collect(1))

	// The same over HTTP.
	var answer struct{ Delivered int }
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/pools/listener/broadcast", `{"via":"http"}`, nil, &answer))
	require.Equal(t, 3, answer.Delivered)
	require.Len(t, collect(3), 3)
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/workers/host-b/listener/0/message", `"hi"`, nil, nil))
	require.Equal(t, map[seen]int{{"host-b", "0", `"hi"`}: 1}, collect(1))
	require.Equal(t, http.StatusNotFound, c.do(http.MethodPost, "/v1/workers/host-b/listener/3/message", `"hi"`, nil, nil))
	require.Equal(t, http.StatusBadRequest, c.do(http.MethodPost, "/v1/workers/host-b/listener/0/message", `{not json`, nil, nil))

	err = cl.SendMessage(ctx, "host-a", "listener", 7, 1)
	require.ErrorIs(t, err, client.ErrNoWorker)
	require.ErrorContains(t, err, "no worker 7")
	err = cl.SendMessage(ctx, "host-a", "nothing", 0, 1)
	require.ErrorIs(t, err, client.ErrNoWorker)
	select {
	case s := <-seenC:
		t.Fatalf("a message reached a worker twice, or one it was not for: %+v", s)
	default:
	}
}
