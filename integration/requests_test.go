package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// A worker asks the conductor side (Job.Request): any NATS responder on
// the command's subject answers, and sees which worker asked; a command
// no one answers is answered "unhandled" at once; a responder's error
// comes back as the request's error, with its code.
func TestRequests_WorkerAsksTheConductorSide(t *testing.T) {
	c := newCluster(t)
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
}
