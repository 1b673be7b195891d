package conductor_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// readLogIndexes reads a log stream in a goroutine of its own and sends
// the index of each line on the channel it returns.
func readLogIndexes(stream *bufio.Reader) <-chan int {
	return readIndexes(stream, func(line string) (int, bool) {
		var l wire.LogLine
		if len(line) == 1 || json.Unmarshal([]byte(line), &l) != nil {
			return 0, false // a keep-alive
		}
		return l.Index, true
	})
}

// TestLogs_FollowCutsSlowReader: a client that stops reading the lines it
// follows is cut off once those waiting for it would pass
// Config.EventBuffer, as an event stream's is, and disconnected; a client
// that reads keeps getting every line.
func TestLogs_FollowCutsSlowReader(t *testing.T) {
	t.Parallel()
	const buffer = 64 << 10
	url, nc, cuts := setupEvents(t, conductor.Config{EventBuffer: buffer, EventWriteTimeout: time.Hour})
	startPrinter(t, nc, "h1", "printer", `exec sleep 600`)
	require.Eventually(t, func() bool {
		_, ok := tryLogs(url, "printer", "?tail=0")
		return ok
	}, 20*time.Second, 20*time.Millisecond, "h1 is live")
	resp, good := getLogs(t, url, "printer", "?follow=true&tail=0")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	read := readLogIndexes(good)
	stalled := openStalledStream(t, url, "/v1/pools/printer/logs?follow=true&tail=0")

	space, _ := subject.New("default")
	publish := func(i int, line string) {
		data, err := json.Marshal(wire.LogLine{Time: time.Now().UTC(), Host: "h1", Pool: "printer", Index: i, PID: 42, Stream: "stdout", Line: line})
		require.NoError(t, err)
		require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: space.Logs("h1", "printer"), Data: data}))
	}
	long := strings.Repeat("x", 16<<10)
	cut := floodUntilCut(t, func(i int) { publish(i, long) }, read, cuts)
	require.Equal(t, "overflow", cut.reason)
	require.LessOrEqual(t, cut.buffered, buffer, "never more queued than the bound")
	require.Greater(t, cut.buffered, buffer-(17<<10), "cut when the next line did not fit")
	publish(-1, "still there")
	require.Equal(t, -1, <-read)
	requireDisconnected(t, stalled)
}
