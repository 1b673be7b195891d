package conductor_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestReview17a_HostLogsItsTypesOnly: a host credential publishes the
// output of the pools of its types only. One of type squares could
// publish lines into the logs of pool other (a pool is named by its job
// type), where an operator following other's logs would read them as
// that pool's.
func TestReview17a_HostLogsItsTypesOnly(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	unseenPub(t, rc, "h1", "conductor.default.logs.h1.other")
	unseenPub(t, rc, "h2", "conductor.default.logs.h2.squares")
}

// TestReview17a_HostTailOfOtherType: a host credential of type squares
// that says, in its heartbeat, that it runs pool other, and answers the
// requests for its tail with lines of other, is not asked for other's
// logs: its lines would be served as that pool's output.
func TestReview17a_HostTailOfOtherType(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	get := func(path string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+rc.tokens["ops"])
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}

	h1, _ := rc.connectAs(t, "h1")
	space, _ := subject.New("default")
	forged := wire.LogLine{Time: time.Now().UTC(), Host: "h1", Pool: "other", Stream: "stdout", Line: "forged by h1"}
	_, err := h1.Subscribe(space.LogTail("h1"), func(m *nats.Msg) {
		data, _ := json.Marshal(wire.LogTail{Host: "h1", Pool: "other", Lines: []wire.LogLine{forged}, Epoch: "e", Next: 1})
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: "h1", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
		Pools: []wire.PoolInfo{{Name: "other", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
	})
	require.NoError(t, h1.Publish(space.Host("h1"), hb))
	require.NoError(t, h1.Flush())
	require.Eventually(t, func() bool {
		code, body := get("/v1/hosts")
		return code == http.StatusOK && strings.Contains(body, `"host":"h1"`)
	}, 20*time.Second, 20*time.Millisecond, "h1 is live")

	code, body := get("/v1/pools/other/logs?tail=10")
	require.NotContains(t, body, "forged by h1", "h1, of type squares, passed lines off as pool other's (%d)", code)
	require.Equal(t, http.StatusNotFound, code, body)
}

// TestReview17a_ConsolePointsSpaced: a stream that opens wakes the
// console's sampler, and the sample it took then became a point a few
// milliseconds after the one before: the charts' rates over so short a
// time read the counters' steps (saved every 200ms) as spikes, in the
// history every page shares. Points are at least consoleInterval apart.
func TestReview17a_ConsolePointsSpaced(t *testing.T) {
	t.Parallel()
	url := setupConsole(t, conductor.Config{})
	resp, err := http.Post(url+"/v1/jobs/console_sq", "application/json", strings.NewReader("7"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	a := openConsole(t, url, "")
	ra := bufio.NewReader(a.Body)
	readSSE(t, ra) // the history
	for range 3 {
		// Right after a snapshot, a stream opens and closes.
		name, _ := readSSE(t, ra)
		require.Equal(t, "snapshot", name)
		b := openConsole(t, url, "")
		require.Equal(t, http.StatusOK, b.StatusCode)
		readSSE(t, bufio.NewReader(b.Body))
		b.Body.Close()
	}
	for range 2 {
		readSSE(t, ra)
	}
	c := openConsole(t, url, "")
	name, data := readSSE(t, bufio.NewReader(c.Body))
	require.Equal(t, "history", name)
	var hist struct {
		Points map[string][]struct {
			T int64 `json:"t"`
		} `json:"points"`
	}
	require.NoError(t, json.Unmarshal([]byte(data), &hist))
	pts := hist.Points["console_sq"]
	require.GreaterOrEqual(t, len(pts), 2)
	for i := 1; i < len(pts); i++ {
		require.GreaterOrEqual(t, pts[i].T-pts[i-1].T, int64(900), "points %d and %d: %v", i-1, i, pts)
	}
}
