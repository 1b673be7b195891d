package integration

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// An aborted batch stops: every job not ended yet ends cancelled, its
// state kept, the running ones cut short, and the batch ends; no job is
// lost (each ended succeeded or cancelled) and none succeeds after.
// Aborting it again does nothing more.
func TestAbort_Batch(t *testing.T) {
	c := newCluster(t)
	c.workerd("host-a", fmt.Sprintf("name=asker,count=2,cmd=%s", filepath.Join(bin, "askworker")))
	c.waitWorkers("asker", 2)
	nc, err := nats.Connect(c.natsURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	held := make(chan *nats.Msg, 16) // the requests of the jobs running: answered when the test says
	_, err = nc.Subscribe("conductor.default.requests.hold", func(m *nats.Msg) { held <- m })
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	const n = 200
	var lines strings.Builder
	for range n {
		fmt.Fprintln(&lines, `{"command":"hold","data":1}`)
	}
	var b client.Batch
	require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/batches/asker", lines.String(), nil, &b))
	// Let two jobs end, and two more run.
	for range 2 {
		select {
		case m := <-held:
			require.NoError(t, m.Respond([]byte(`"done"`)))
		case <-time.After(20 * time.Second):
			t.Fatal("no job ran")
		}
	}
	for range 2 {
		select {
		case <-held:
		case <-time.After(20 * time.Second):
			t.Fatal("the next jobs did not run")
		}
	}

	var res client.BatchAbort
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/batches/"+b.ID+"/abort", "", nil, &res))
	require.Equal(t, client.BatchAbort{Batch: b.ID, Cancelled: n - 2, Ended: 2}, res)

	require.Eventually(t, func() bool {
		c.do(http.MethodGet, "/v1/batches/"+b.ID, "", nil, &b)
		return b.Ended()
	}, time.Minute, 50*time.Millisecond, "the batch ends: %+v", b)
	// A job a worker held queued (prefetched) may start before its
	// cancel reaches it: it is cut short, and ends cancelled all the same.
	require.Equal(t, 2, b.Succeeded, "%+v", b)
	require.Equal(t, n-2, b.Cancelled, "%+v", b)

	var again client.BatchAbort
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/batches/"+b.ID+"/abort", "", nil, &again))
	require.Equal(t, client.BatchAbort{Batch: b.ID, Ended: n}, again)
	require.Equal(t, http.StatusNotFound, c.do(http.MethodPost, "/v1/batches/nope/abort", "", nil, nil))
}
