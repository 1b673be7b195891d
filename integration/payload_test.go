package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// lineLenWorker reads its jobs one per line, as a worker in another
// language does, and answers each with the length of its payload's JSON.
const lineLenWorker = `#!/usr/bin/env python3
import json, os
out = os.fdopen(4, "w", buffering=1)
out.write(json.dumps({"op": "ready"}) + "\n")
for line in os.fdopen(3, "r"):
    m = json.loads(line)
    if m.get("op") == "shutdown":
        break
    if m.get("op") == "job":
        p = m.get("payload")
        out.write(json.dumps({"op": "done", "id": m["id"], "result": len(p) if isinstance(p, str) else -1}) + "\n")
`

// Payloads over the inline limit (1 MiB) go by reference through the real
// binaries: a 5 MiB one submitted over HTTP reaches an SDK worker framed,
// and a 3 MiB one a worker that reads lines, in its line; each job's state
// names the object, which is gone once the job has succeeded. One over
// the limit (a --max-payload of 8 MiB here) is refused 413.
func TestPayloads_LargeByReference(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is absent: the worker that reads payloads in its lines is a python3 script")
	}
	t.Parallel()
	script := filepath.Join(t.TempDir(), "line-len-worker.py")
	require.NoError(t, os.WriteFile(script, []byte(lineLenWorker), 0o755))
	c := newCluster(t, withArgs("--max-payload", strconv.Itoa(8<<20)))
	c.workerd("payloads", "name=lines,count=1,cmd="+script, fmt.Sprintf("name=noop,count=1,cmd=%s", filepath.Join(bin, "noop-worker")))
	c.waitWorkers("lines", 1)
	c.waitWorkers("noop", 1)

	var j client.Job
	big := `{"blob":"` + strings.Repeat("z", 5<<20) + `"}`
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/noop?wait=60s", big, nil, &j))
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.NotNil(t, j.PayloadRef)
	require.Equal(t, int64(len(big)), j.PayloadRef.Size)

	s := strings.Repeat("y", 3<<20)
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/lines?wait=60s", `"`+s+`"`, nil, &j))
	require.Equal(t, client.StatusSucceeded, j.Status, j.Error)
	require.JSONEq(t, strconv.Itoa(len(s)), string(j.Result))

	var refused map[string]string
	require.Equal(t, http.StatusRequestEntityTooLarge, c.do(http.MethodPost, "/v1/jobs/noop", `"`+strings.Repeat("x", 8<<20)+`"`, nil, &refused))
	require.Contains(t, refused["error"], "over the limit of 8388608 bytes")

	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s, err := js.Stream(t.Context(), "OBJ_conductor-default-payloads")
		if err != nil {
			return false
		}
		info, err := s.Info(t.Context())
		return err == nil && info.State.Msgs == 0
	}, 20*time.Second, 50*time.Millisecond, "the objects of the jobs that succeeded are removed")
}
