package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	pkgclient "github.com/conductor-run/conductor/pkg/client"
)

// The contract of GET /v1/pools/{name}/logs that conductorctl logs reads
// (the endpoint is another branch's): application/x-ndjson, one record a
// line, an error record for a host that did not answer, blank lines as
// keep-alives; without follow the stream ends after the tail.
const logTail = `{"time":"2026-12-05T10:00:00.123456789Z","host":"h1","pool":"squares","index":0,"pid":41,"stream":"stdout","line":"ready"}

{"host":"h2","pool":"squares","error":"no answer within 5s"}
{"time":"2026-12-05T10:00:01Z","host":"h1","pool":"squares","index":1,"pid":42,"stream":"stderr","line":"boom: x=1","dropped":7}
`

// logsAPI is a fake conductord serving the logs of pool squares: the tail,
// then, when following, the lines sent on more, until the client goes.
type logsAPI struct {
	srv   *httptest.Server
	query chan string
	more  chan string
}

func newLogsAPI(t *testing.T) *logsAPI {
	api := &logsAPI{query: make(chan string, 10), more: make(chan string, 10)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pools/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		api.query <- r.URL.RawQuery
		if r.PathValue("name") != "squares" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"conductor: pool not found: no live host runs pool \"`+r.PathValue("name")+`\""}`)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, logTail)
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("follow") != "true" {
			return
		}
		for {
			select {
			case <-r.Context().Done():
				return
			case line := <-api.more:
				_, _ = io.WriteString(w, line)
				w.(http.Flusher).Flush()
			}
		}
	})
	api.srv = httptest.NewServer(mux)
	t.Cleanup(api.srv.Close)
	return api
}

func TestLogs_Tail(t *testing.T) {
	t.Parallel()
	api := newLogsAPI(t)
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"--server", api.srv.URL, "logs", "squares", "--tail", "20", "--host", "h1"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "host=h1&tail=20", <-api.query)
	require.Equal(t, "2026-12-05T10:00:00.123Z h1/squares[0] stdout: ready\n"+
		"2026-12-05T10:00:01.000Z h1/squares[1] stderr: boom: x=1 (7 lines dropped)\n", out.String())
	require.Equal(t, "conductorctl: host h2 (pool squares): no answer within 5s\n", errOut.String())

	out.Reset()
	errOut.Reset()
	code = Main(context.Background(), []string{"--server", api.srv.URL, "-o", "json", "logs", "squares"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "", <-api.query, "no tail, no host: conductord's defaults")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2, "one JSON object a line")
	var rec pkgclient.LogLine
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &rec))
	require.Equal(t, pkgclient.LogLine{Time: rec.Time, Host: "h1", Pool: "squares", Index: 1, PID: 42, Stream: "stderr", Line: "boom: x=1", Dropped: 7}, rec)
	require.Equal(t, "2026-12-05T10:00:01Z", rec.Time.Format("2006-01-02T15:04:05Z07:00"))
	require.Contains(t, errOut.String(), "no answer within 5s")

	code = Main(context.Background(), []string{"--server", api.srv.URL, "logs", "ghost"}, &out, &errOut)
	require.Equal(t, ExitFailure, code)
	require.Contains(t, errOut.String(), `no live host runs pool "ghost" (404 Not Found)`)
}

func TestLogs_Follow(t *testing.T) {
	t.Parallel()
	api := newLogsAPI(t)
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := make(chanWriter, 100), make(chanWriter, 100)
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"--server", api.srv.URL, "logs", "-f", "squares"}, out, errOut)
	}()
	require.Equal(t, "follow=true", <-api.query)
	require.Equal(t, "2026-12-05T10:00:00.123Z h1/squares[0] stdout: ready\n", out.next(t))
	require.Contains(t, errOut.next(t), "no answer within 5s")
	require.Contains(t, out.next(t), "(7 lines dropped)")

	api.more <- "\n" // a keep-alive
	api.more <- `{"time":"2026-12-05T10:00:02Z","host":"h1","pool":"squares","index":0,"pid":41,"stream":"stdout","line":"49"}` + "\n"
	require.Equal(t, "2026-12-05T10:00:02.000Z h1/squares[0] stdout: 49\n", out.next(t))

	cancel()
	require.Equal(t, 0, <-done, "an interrupt ends logs -f cleanly")
}
