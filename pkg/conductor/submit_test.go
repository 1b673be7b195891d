package conductor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestConductor_SubmitByRequest submits jobs by NATS request, as a service
// in any language can, and gets their results in the reply.
func TestConductor_SubmitByRequest(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	startAgent(t, bundle, "squares")
	space, _ := subject.New("default")

	request := func(typ, payload string, hdr map[string]string) (string, map[string]any) {
		t.Helper()
		m := nats.NewMsg(space.Submit(typ))
		m.Data = []byte(payload)
		for k, v := range hdr {
			m.Header.Set(k, v)
		}
		r, err := bundle.nc.RequestMsg(m, 30*time.Second)
		require.NoError(t, err)
		var answer map[string]any
		require.NoError(t, json.Unmarshal(r.Data, &answer), string(r.Data))
		return r.Header.Get(names.HeaderStatus), answer
	}

	status, j := request("squares", "7", nil)
	require.Equal(t, "200", status)
	require.Equal(t, "succeeded", j["status"])
	require.EqualValues(t, 49, j["result"])

	status, j = request("squares", "8", map[string]string{names.HeaderWait: "0"})
	require.Equal(t, "202", status)
	done, err := c.Client().Wait(context.Background(), j["id"].(string))
	require.NoError(t, err)
	require.JSONEq(t, "64", string(done.Result))

	status, j = request("squares", "9", map[string]string{names.HeaderIdempotencyKey: "k1"})
	require.Equal(t, "200", status)
	status, again := request("squares", "10", map[string]string{names.HeaderIdempotencyKey: "k1"})
	require.Equal(t, "200", status)
	require.Equal(t, j["id"], again["id"], "one job per key")
	require.EqualValues(t, 81, again["result"])

	start := time.Now()
	status, j = request("squares", "3", map[string]string{"Conductor-Delay": "300ms"})
	require.Equal(t, "200", status)
	require.EqualValues(t, 9, j["result"])
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "a delayed job waits its time")
	status, _ = request("squares", "3", map[string]string{"Conductor-Delay": "soon"})
	require.Equal(t, "400", status)

	status, j = request("squares", "4", map[string]string{"Conductor-Priority": "high"})
	require.Equal(t, "200", status)
	require.Equal(t, "high", j["priority"])
	status, j = request("squares", "4", map[string]string{"Conductor-Priority": "asap"})
	require.Equal(t, "400", status)
	require.Contains(t, j["error"], `bad priority "asap"`)

	status, j = request("squares", "not json", nil)
	require.Equal(t, "400", status)
	require.Equal(t, "payload is not valid JSON", j["error"])
	status, j = request("squares", "1", map[string]string{names.HeaderWait: "forever"})
	require.Equal(t, "400", status)
	require.Contains(t, j["error"], `bad wait "forever"`)
}
