package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/client"
)

// Payloads reach an SDK worker framed, as they are: a large one whole, a
// newline-laden one unsplit, and one that is not JSON (which only a publish
// straight to the job stream can queue) to the handler's Decode, whose
// error ends the job dead with the payload kept as a JSON string.
func TestPayloads_FramedToTheSDK(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.workerd("payloads", squares(1), fmt.Sprintf("name=noop,count=1,cmd=%s", filepath.Join(bin, "noop-worker")))
	c.waitWorkers("squares", 1)
	c.waitWorkers("noop", 1)

	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	defer nc.Close()
	publish := func(typ, id, payload string) {
		m := nats.NewMsg("conductor.default.jobs." + typ)
		m.Header.Set(names.HeaderJobID, id)
		m.Data = []byte(payload)
		_, err := nc.RequestMsg(m, 10*time.Second)
		require.NoError(t, err)
	}
	publish("squares", "not-json", "{7 apples\n")
	publish("squares", "spaced", "\n  12\n\n")
	big := `{"blob":"` + strings.Repeat("z", 1000<<10) + `"}`
	publish("noop", "big", big)

	j := c.ended("not-json")
	require.Equal(t, client.StatusDead, j.Status)
	require.Contains(t, j.Error, "payload must be a number")
	require.Contains(t, j.Error, "invalid character")
	require.JSONEq(t, `"{7 apples\n"`, string(j.Payload), "kept as a string")
	require.Equal(t, 1, j.Attempts)

	j = c.ended("spaced")
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, "144", string(j.Result))

	j = c.ended("big")
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
}
