package conductor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

var (
	eventTime = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	exitEvent = wire.Event{
		Time: eventTime, Kind: wire.EventWorkerExit, Host: "a", Pool: "squares", Index: 1, PID: 42,
		Reason: wire.ReasonFailure, Exit: "exit status 2", Code: 2, Uptime: wire.Duration(3 * time.Second),
	}
	failedEvent = wire.Event{
		Time: eventTime, Kind: wire.EventPoolFailed, Host: "a", Pool: "squares",
		RetryAt: eventTime.Add(time.Minute), Error: "5 exits within 1m0s",
	}
)

// publishEvent announces e as a worker or pool event, as workerd does.
func publishEvent(t *testing.T, nc *nats.Conn, scope string, e wire.Event) {
	t.Helper()
	space, err := subject.New("default")
	require.NoError(t, err)
	subj := space.PoolEvent(e.Pool, e.Kind)
	if scope == client.ScopeWorker {
		subj = space.WorkerEvent(e.Pool, e.Kind)
	}
	data, err := json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, nc.Publish(subj, data))
	require.NoError(t, nc.Flush())
}

// openStream opens GET /v1/events (with query) and returns its lines; the
// stream ends with the test, or after a minute.
func openStream(t *testing.T, url, query string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/events"+query, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// nextData returns the data of the next event on an SSE stream.
func nextData(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			blank, err := r.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "\n", blank, "an event ends with a blank line")
			return strings.TrimSuffix(data, "\n")
		}
	}
}

func TestConductor_EventStream(t *testing.T) {
	t.Parallel()
	c, bundle := setup(t, conductor.Config{})
	srv := serve(t, c)

	resp, _ := openStream(t, srv.URL, "?pool=bad.pool")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	resp, stream := openStream(t, srv.URL, "?pool=squares")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	other := exitEvent
	other.Pool = "other"
	publishEvent(t, bundle.nc, client.ScopeWorker, other)
	publishEvent(t, bundle.nc, client.ScopeWorker, exitEvent)
	publishEvent(t, bundle.nc, client.ScopePool, failedEvent)

	require.JSONEq(t, `{"scope":"worker","time":"2026-11-23T10:00:00Z","kind":"exit","host":"a","pool":"squares",
		"index":1,"pid":42,"reason":"failure","exit":"exit status 2","code":2,"uptime":"3s"}`, nextData(t, stream))
	require.JSONEq(t, `{"scope":"pool","time":"2026-11-23T10:00:00Z","kind":"failed","host":"a","pool":"squares",
		"retry_at":"2026-11-23T10:01:00Z","error":"5 exits within 1m0s"}`, nextData(t, stream))
}

func TestConductor_StopEndsEventStreams(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{})
	srv := serve(t, c)
	resp, stream := openStream(t, srv.URL, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	c.Stop()
	rest, err := io.ReadAll(stream)
	require.NoError(t, err, "the stream ends cleanly")
	require.Empty(t, string(rest))
}
