package conductor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/conductor"
)

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

// TestReview17a_StopEndsOpenStreams: conductord stops, within its
// bounds, with a console stream, a log stream following, one that does
// not read, and one waiting for a host that does not answer for its tail;
// each of them ends.
func TestReview17a_StopEndsOpenStreams(t *testing.T) {
	t.Parallel()
	c, err := conductor.New(conductor.Config{DataDir: t.TempDir(), NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background()))
	t.Cleanup(c.Stop)
	url := "http://" + c.HTTPAddr()
	nc, err := nats.Connect(c.NATSURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	startPrinter(t, nc, "h1", "printer", `i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.01; done`)
	require.Eventually(t, func() bool {
		got, ok := tryLogs(url, "printer", "?tail=1")
		return ok && len(got) == 1
	}, 20*time.Second, 20*time.Millisecond, "h1 is live")

	ended := make(chan string, 8)
	open := func(name, path string, read bool) {
		resp, err := http.Get(url + path)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		go func() {
			defer resp.Body.Close()
			if read {
				_, _ = io.Copy(io.Discard, resp.Body)
			} else {
				_, _ = resp.Body.Read(make([]byte, 1)) // then reads no more
				<-t.Context().Done()
			}
			ended <- name
		}()
	}
	open("console", "/v1/console/stream", true)
	open("logs", "/v1/pools/printer/logs?follow=true", true)
	open("stalled logs", "/v1/pools/printer/logs?follow=true", false)
	open("stalled console", "/v1/console/stream", false)
	// h2 runs the pool and does not answer: a stream waits for it.
	space, _ := subject.New("default")
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: "h2", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
		Pools: []wire.PoolInfo{{Name: "printer", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
	})
	_, err = nc.Subscribe(space.LogTail("h2"), func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, nc.Publish(space.Host("h2"), hb))
	require.NoError(t, nc.Flush())
	asking := make(chan error, 1)
	go func() {
		resp, err := http.Get(url + "/v1/pools/printer/logs?follow=true")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		asking <- err
	}()

	stopped := make(chan struct{})
	go func() { c.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Stop hangs with streams open")
	}
	for range 2 {
		select {
		case name := <-ended:
			t.Logf("%s ended", name)
		case <-time.After(10 * time.Second):
			t.Fatal("a stream read to its end did not end")
		}
	}
	select {
	case <-asking:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream waiting for the tails did not end")
	}
}

// TestReview17a_RevokeEndsConsoleStream: a console stream opened with an
// operator's credential ends when the credential is revoked.
func TestReview17a_RevokeEndsConsoleStream(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v1/console/stream", nil)
	req.Header.Set("Authorization", "Bearer "+rc.tokens["ops"])
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	name, _ := readSSE(t, r)
	require.Equal(t, "history", name)
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, r)
		ended <- err
	}()
	require.NoError(t, auth.Revoke(rc.creds, "ops"))
	select {
	case err := <-ended:
		require.NoError(t, err, "the stream ends cleanly")
	case <-time.After(10 * time.Second):
		t.Fatal("a revoked operator's console stream goes on")
	}
}
