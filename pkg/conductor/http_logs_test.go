package conductor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// logObject is one object of a log stream: a line, or a host's error.
type logObject struct {
	wire.LogLine
	Error string `json:"error"`
}

// startPrinter starts a workerd agent, host, running pool: one worker
// that runs the shell script. It stops with the test.
func startPrinter(t *testing.T, nc *nats.Conn, host, pool, script string) {
	t.Helper()
	a, err := agent.New(agent.Config{
		Conn: nc, Host: host, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Pools: []broker.Spec{{
			Name: pool, Count: 1, Protocol: broker.ProtocolNone, KillTimeout: 2 * time.Second,
			Cmd: []string{"/bin/sh", "-c", script},
		}},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
}

// getLogs calls GET /v1/pools/{pool}/logs with query and returns the
// answer and its body, read as it comes.
func getLogs(t *testing.T, url, pool, query string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/pools/"+pool+"/logs"+query, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// nextLog reads the next object of a log stream, past keep-alives.
func nextLog(t *testing.T, r *bufio.Reader) logObject {
	t.Helper()
	for {
		line, err := r.ReadBytes('\n')
		require.NoError(t, err)
		if len(line) == 1 {
			continue
		}
		var o logObject
		require.NoError(t, json.Unmarshal(line, &o), "%s", line)
		return o
	}
}

// readAllLogs reads a log stream that ends.
func readAllLogs(t *testing.T, r *bufio.Reader) []logObject {
	t.Helper()
	var out []logObject
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		var o logObject
		require.NoError(t, json.Unmarshal(line, &o), "%s", line)
		out = append(out, o)
	}
}

// tailOf waits until GET /v1/pools/{pool}/logs (query) gives n objects,
// every host taking tail requests, and returns them.
func tailOf(t *testing.T, url, pool, query string, n int) []logObject {
	t.Helper()
	var got []logObject
	require.Eventually(t, func() bool {
		var ok bool
		got, ok = tryLogs(url, pool, query)
		// A host just started may not take tail requests yet.
		return ok && len(got) >= n && !slices.ContainsFunc(got, func(o logObject) bool { return strings.Contains(o.Error, "does not answer") })
	}, 20*time.Second, 20*time.Millisecond, "want %d objects, have %v", n, got)
	require.Len(t, got, n)
	return got
}

// tryLogs reads GET /v1/pools/{pool}/logs (query), which must end; ok is
// false for anything but a 200 of NDJSON objects. It asserts nothing, for
// a condition of require.Eventually.
func tryLogs(url, pool, query string) (got []logObject, ok bool) {
	resp, err := http.Get(url + "/v1/pools/" + pool + "/logs" + query)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		return nil, false
	}
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return got, true
		}
		var o logObject
		if err != nil || json.Unmarshal(line, &o) != nil {
			return nil, false
		}
		got = append(got, o)
	}
}

// TestLogs_Tail: the lines a worker printed come back in order, with
// host, pool, index, pid and stream; tail=N gives the last N.
func TestLogs_Tail(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "printer", `for i in 1 2 3 4 5; do echo "out $i"; done; echo "err 6" >&2; exec sleep 600`)

	got := tailOf(t, srv.URL, "printer", "", 6)
	pid := got[0].PID
	require.NotZero(t, pid)
	// stdout's lines in order; stderr's, a pipe of its own, read when it
	// comes.
	var out []string
	for _, o := range got {
		require.Empty(t, o.Error)
		require.Equal(t, "h1", o.Host)
		require.Equal(t, "printer", o.Pool)
		require.Equal(t, 0, o.Index)
		require.Equal(t, pid, o.PID)
		if o.Line == "err 6" {
			require.Equal(t, "stderr", o.Stream)
			continue
		}
		require.Equal(t, "stdout", o.Stream)
		out = append(out, o.Line)
	}
	require.Equal(t, []string{"out 1", "out 2", "out 3", "out 4", "out 5"}, out)

	last := readAllLogs(t, second(getLogs(t, srv.URL, "printer", "?tail=2&host=h1")))
	require.Equal(t, got[4:], last)
	none := readAllLogs(t, second(getLogs(t, srv.URL, "printer", "?tail=0")))
	require.Empty(t, none)
}

func second[A, B any](_ A, b B) B { return b }

// TestLogs_BadRequests: a bad tail, follow, pool or host is 400; a pool
// no live host runs, or a host that does not run it, 404.
func TestLogs_BadRequests(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "printer", `exec sleep 600`)
	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/printer/logs?tail=1001", http.StatusBadRequest, `tail must be a whole number of lines from 0 to 1000, not \"1001\"`},
		{"/printer/logs?tail=-1", http.StatusBadRequest, "tail must be"},
		{"/printer/logs?tail=ten", http.StatusBadRequest, "tail must be"},
		{"/printer/logs?follow=yes", http.StatusBadRequest, `follow must be true or false, not \"yes\"`},
		{"/printer/logs?host=a.b", http.StatusBadRequest, "host"},
		{"/bad.pool/logs", http.StatusBadRequest, "pool"},
		{"/ghost/logs", http.StatusNotFound, `{"error":"no live host runs pool ghost"}`},
		{"/printer/logs?host=h9", http.StatusNotFound, "host h9 is not live or does not run pool printer"},
	} {
		resp, err := http.Get(srv.URL + "/v1/pools" + tc.path)
		require.NoError(t, err)
		code, body := readAnswer(t, resp)
		require.Equal(t, tc.code, code, "%s: %s", tc.path, body)
		require.Contains(t, body, tc.want, tc.path)
	}
}

// TestLogs_TwoHostsAndOneSilent: the tails of two hosts are merged in time
// order; a host that does not answer in 2s is one error object, and the
// others' lines come all the same.
func TestLogs_TwoHostsAndOneSilent(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	// Each prints its lines in turn (a on turns 1, 3, 5; b on 2, 4, 6),
	// counted in a shared file, so that their times interleave.
	turn := t.TempDir() + "/turn"
	script := func(me string, offset int) string {
		return fmt.Sprintf(`for i in 1 2 3; do
			want=$((2*i - 1 + %[3]d))
			until [ "$(cat %[1]s 2>/dev/null || echo 1)" = "$want" ]; do sleep 0.005; done
			echo "%[2]s $i"; sleep 0.02
			echo $((want + 1)) > %[1]s.tmp && mv %[1]s.tmp %[1]s
		done; exec sleep 600`, turn, me, offset)
	}
	startPrinter(t, b.nc, "h1", "printer", script("a", 0))
	startPrinter(t, b.nc, "h2", "printer", script("b", 1))
	// h3 says it runs the pool and takes the tail requests, never answering.
	space, _ := subject.New("default")
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: "h3", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
		Pools: []wire.PoolInfo{{Name: "printer", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
	})
	require.NoError(t, b.nc.Publish(space.Host("h3"), hb))
	_, err := b.nc.Subscribe(space.LogTail("h3"), func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, b.nc.Flush())

	got := tailOf(t, srv.URL, "printer", "", 7)
	require.Equal(t, logObject{LogLine: wire.LogLine{Host: "h3", Pool: "printer"}, Error: "host h3 did not answer in 2s"}, got[0])
	var lines []string
	for i, o := range got[1:] {
		lines = append(lines, o.Line)
		require.Equal(t, map[string]string{"a": "h1", "b": "h2"}[o.Line[:1]], o.Host)
		if i > 0 {
			require.False(t, o.Time.Before(got[i].Time), "in time order")
		}
	}
	require.Equal(t, []string{"a 1", "b 1", "a 2", "b 2", "a 3", "b 3"}, lines)
}

// TestLogs_FollowSeam: a stream that follows gets the tail, then every new
// line: none is lost or doubled where the two meet, while the worker
// prints all along.
func TestLogs_FollowSeam(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "printer", `i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.002; done`)
	tailOf(t, srv.URL, "printer", "?tail=50", 50) // it has printed 50 lines
	for range 5 {
		_, body := getLogs(t, srv.URL, "printer", "?tail=20&follow=true")
		first := nextLog(t, body)
		n, err := strconv.Atoi(strings.TrimPrefix(first.Line, "line "))
		require.NoError(t, err, first.Line)
		for i := 1; i < 200; i++ { // the 20 of the tail, then the live ones
			o := nextLog(t, body)
			require.Equal(t, fmt.Sprintf("line %d", n+i), o.Line, "after %d lines", i)
			require.Zero(t, o.Dropped)
		}
	}
}

// TestLogs_FollowNotesAHostThatLeaves: a stream that follows a pool on
// every host says when one of them leaves ({"host","pool","error"}) and
// goes on with the others' lines.
func TestLogs_FollowNotesAHostThatLeaves(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "ticker", `i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done`)
	space, _ := subject.New("default")
	heartbeat := func(leaving bool) {
		hb, _ := json.Marshal(wire.Heartbeat{
			Host: "h2", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute), Leaving: leaving,
			Pools: []wire.PoolInfo{{Name: "ticker", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
		})
		require.NoError(t, b.nc.Publish(space.Host("h2"), hb))
		require.NoError(t, b.nc.Flush())
	}
	// h2 says it runs the pool and takes the tail requests, never answering.
	_, err := b.nc.Subscribe(space.LogTail("h2"), func(*nats.Msg) {})
	require.NoError(t, err)
	heartbeat(false)
	tailOf(t, srv.URL, "ticker", "?tail=1", 2) // h1's line, and h2's note: it does not answer

	resp, r := getLogs(t, srv.URL, "ticker", "?tail=0&follow=true")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "h1", nextLog(t, r).Host)
	heartbeat(true)
	for {
		o := nextLog(t, r)
		if o.Error != "" {
			require.Equal(t, logObject{LogLine: wire.LogLine{Host: "h2", Pool: "ticker"}, Error: "host h2 left: it is not live, or runs pool ticker no more"}, o)
			break
		}
		require.Equal(t, "h1", o.Host)
	}
	require.Equal(t, "h1", nextLog(t, r).Host, "h1's lines go on")
}
