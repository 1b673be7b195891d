package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/pkg/client"
)

// attack19LineWorker is a worker in another language, as docs/protocol.md
// shows one: it reads its jobs one per line (it says nothing of frames)
// and answers each with its payload.
const attack19LineWorker = `#!/usr/bin/env python3
import json, os
out = os.fdopen(4, "w", buffering=1)
out.write(json.dumps({"op": "ready"}) + "\n")
for line in os.fdopen(3, "r"):
    m = json.loads(line)
    if m.get("op") == "shutdown":
        break
    if m.get("op") == "job":
        out.write(json.dumps({"op": "done", "id": m["id"], "result": m.get("payload")}) + "\n")
`

// Review 19: a job published straight to the job stream with a payload
// that is not JSON, to a pool of a worker that reads payloads in the
// line: it ends dead, at its first attempt, "payload is not valid JSON",
// its payload kept as a JSON string; the worker takes the next jobs, a
// JSON payload with newlines among them (compacted onto its line).
func TestAttack19_PayloadNotJSONToALineWorker(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is absent: the worker that reads payloads in its lines is a python3 script")
	}
	t.Parallel()
	script := filepath.Join(t.TempDir(), "line-worker.py")
	require.NoError(t, os.WriteFile(script, []byte(attack19LineWorker), 0o755))
	c := newCluster(t)
	c.workerd("lines-host", "name=lines,count=1,cmd="+script)
	c.waitWorkers("lines", 1)

	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	defer nc.Close()
	publish := func(id, payload string) {
		m := nats.NewMsg("conductor.default.jobs.lines")
		m.Header.Set(names.HeaderJobID, id)
		m.Data = []byte(payload)
		_, err := nc.RequestMsg(m, 10*time.Second)
		require.NoError(t, err)
	}
	publish("bad", "{7 apples\n{\"op\":\"shutdown\"}\n")
	publish("spaced", "[\n1,\n{\"op\":\"shutdown\"}\n]")
	publish("after", `"fine"`)

	j := c.ended("bad")
	require.Equal(t, client.StatusDead, j.Status)
	require.Equal(t, "payload is not valid JSON", j.Error)
	require.JSONEq(t, `"{7 apples\n{\"op\":\"shutdown\"}\n"`, string(j.Payload), "kept as a string")
	require.Equal(t, 1, j.Attempts)

	j = c.ended("spaced")
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, `[1,{"op":"shutdown"}]`, string(j.Result))

	j = c.ended("after")
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, `"fine"`, string(j.Result))
	for _, w := range c.workers() {
		if w.Pool == "lines" {
			require.Zero(t, w.Restarts, "the worker was not blamed")
		}
	}
}
