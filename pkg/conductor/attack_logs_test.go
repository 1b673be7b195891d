package conductor_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
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

// attackStreamGoroutines counts the goroutines of log streams: watchLive
// and the pumps.
func attackStreamGoroutines() (int, string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var hits []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "conductor.(*Conductor).watchLive") || strings.Contains(g, "conductor.(*pump[") ||
			strings.Contains(g, "conductor.(*Conductor).streamLogs") {
			n++
			hits = append(hits, g)
		}
	}
	return n, strings.Join(hits, "\n\n")
}

// attackHeartbeat publishes a heartbeat of a fake host running pool.
func attackHeartbeat(t *testing.T, nc *nats.Conn, host, pool string, leaving bool) {
	t.Helper()
	space, _ := subject.New("default")
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: host, PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute), Leaving: leaving,
		Pools: []wire.PoolInfo{{Name: pool, Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
	})
	require.NoError(t, nc.Publish(space.Host(host), hb))
	require.NoError(t, nc.Flush())
}

// TestAttack_LogsLesserCredentials: a submitter (even of the pool's own
// type) and a host credential may not read a pool's logs, followed or not.
func TestAttack_LogsLesserCredentials(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	startHost(t, rc, "h1", "squares")
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	get := func(who, path string) int {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+rc.tokens[who])
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return get("ops", "/v1/pools/squares/logs?tail=1") == http.StatusOK },
		20*time.Second, 20*time.Millisecond, "an operator reads the logs once h1 is heard")
	for _, who := range []string{"web", "h1", "h2"} {
		for _, path := range []string{"/v1/pools/squares/logs?follow=true", "/v1/pools/squares/logs?tail=1", "/v1/pools/squares/logs?host=h1&follow=true"} {
			require.Equal(t, http.StatusForbidden, get(who, path), "%s %s", who, path)
		}
	}
}

// TestAttack_LogsNoLeakAfterDisconnect: followed log streams whose clients
// go away leave no goroutine behind (watchLive, the pump, the handler).
// Not parallel: it counts goroutines.
func TestAttack_LogsNoLeakAfterDisconnect(t *testing.T) {
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "ticker", `i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.05; done`)
	tailOf(t, srv.URL, "ticker", "?tail=1", 1)
	for _, q := range []string{"?follow=true", "?host=h1&follow=true", "?tail=0&follow=true", "?tail=1000&follow=true"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/pools/ticker/logs"+q, nil)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		buf := make([]byte, 1)
		_, err = io.ReadFull(resp.Body, buf)
		require.NoError(t, err)
		cancel()
		resp.Body.Close()
	}
	var n int
	var stacks string
	require.Eventually(t, func() bool { n, stacks = attackStreamGoroutines(); return n == 0 },
		10*time.Second, 20*time.Millisecond, "goroutines of closed log streams remain:\n%s", stacks)
}

// TestAttack_LogsStopWhileFollowing: Stop with followed log streams open
// returns in bounded time, every stream ends, and none of their goroutines
// remain. Not parallel: it counts goroutines.
func TestAttack_LogsStopWhileFollowing(t *testing.T) {
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "ticker", `i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.05; done`)
	tailOf(t, srv.URL, "ticker", "?tail=1", 1)
	ended := make(chan error, 3)
	for _, q := range []string{"?follow=true", "?host=h1&follow=true", "?tail=0&follow=true"} {
		resp, r := getLogs(t, srv.URL, "ticker", q)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		_, err := r.ReadBytes('\n')
		require.NoError(t, err)
		go func() { _, err := io.Copy(io.Discard, r); ended <- err }()
	}
	stopped := make(chan struct{})
	go func() { c.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("Stop hangs with log streams open")
	}
	for range 3 {
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("a followed log stream did not end when conductord stopped")
		}
	}
	var n int
	var stacks string
	require.Eventually(t, func() bool { n, stacks = attackStreamGoroutines(); return n == 0 },
		10*time.Second, 20*time.Millisecond, "goroutines of log streams remain after Stop:\n%s", stacks)
}

// TestAttack_LogsHostFlaps: a host that leaves, returns and leaves again is
// noted each time it leaves in a stream of all hosts; a --host stream of
// it ends with the note at its first leave.
func TestAttack_LogsHostFlaps(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "ticker", `i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.05; done`)
	space, _ := subject.New("default")
	_, err := b.nc.Subscribe(space.LogTail("h2"), func(*nats.Msg) {}) // takes tail requests, never answers
	require.NoError(t, err)
	attackHeartbeat(t, b.nc, "h2", "ticker", false)
	hosts := func() []string {
		var ids []string
		for _, h := range c.Hosts() {
			ids = append(ids, h.Host)
		}
		return ids
	}
	require.Eventually(t, func() bool { return slices.Contains(hosts(), "h2") && slices.Contains(hosts(), "h1") }, 20*time.Second, 10*time.Millisecond)

	all, ra := getLogs(t, srv.URL, "ticker", "?tail=0&follow=true")
	require.Equal(t, http.StatusOK, all.StatusCode)
	one, r1 := getLogs(t, srv.URL, "ticker", "?host=h2&tail=0&follow=true")
	require.Equal(t, http.StatusOK, one.StatusCode)

	// untilNote reads all-host objects until a note on h2 (h1's lines
	// otherwise).
	untilNote := func() logObject {
		for {
			o := nextLog(t, ra)
			if o.Error != "" && o.Host == "h2" {
				return o
			}
			require.Equal(t, "h1", o.Host, "%+v", o)
		}
	}
	attackHeartbeat(t, b.nc, "h2", "ticker", true)
	require.Contains(t, untilNote().Error, "host h2 left")
	got := readAllLogs(t, r1)
	require.NotEmpty(t, got, "the --host stream says why it ended")
	require.Contains(t, got[len(got)-1].Error, "host h2 left")

	// h2 returns: the stream of all hosts watches it again once its
	// check has seen it (two hostsCheck ticks at 50ms a line: 60 lines).
	attackHeartbeat(t, b.nc, "h2", "ticker", false)
	require.Eventually(t, func() bool { return slices.Contains(hosts(), "h2") }, 10*time.Second, 10*time.Millisecond)
	for range 60 {
		o := nextLog(t, ra)
		require.Empty(t, o.Error, "h2 is back: no note %+v", o)
	}
	attackHeartbeat(t, b.nc, "h2", "ticker", true)
	require.Contains(t, untilNote().Error, "host h2 left", "the second leave is noted too")
	_ = client.StatusDead
}

// TestAttack_LogsDropNoteWhileTailsAsked: with a small EventBuffer, the
// live lines that come while a host that never answers is asked for its
// tail (logtail.Wait) overflow the buffer: the stream is not cut; it
// gives the tails, a note (no host) saying how many lines were left out,
// and goes on with the live lines.
func TestAttack_LogsDropNoteWhileTailsAsked(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{EventBuffer: 2048})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "fast", `i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.002; done`)
	space, _ := subject.New("default")
	_, err := b.nc.Subscribe(space.LogTail("h2"), func(*nats.Msg) {}) // never answers: the tails take logtail.Wait
	require.NoError(t, err)
	attackHeartbeat(t, b.nc, "h2", "fast", false)
	require.Eventually(t, func() bool {
		n := 0
		for _, h := range c.Hosts() {
			if h.Host == "h1" || h.Host == "h2" {
				n++
			}
		}
		return n == 2
	}, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { // h1 takes tail requests
		got, ok := tryLogs(srv.URL, "fast", "?tail=1")
		return ok && slices.ContainsFunc(got, func(o logObject) bool { return o.Host == "h1" && o.Error == "" })
	}, 20*time.Second, 20*time.Millisecond)

	resp, r := getLogs(t, srv.URL, "fast", "?tail=1&follow=true")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var dropNote *logObject
	lines := 0
	for dropNote == nil || lines < 20 {
		o := nextLog(t, r)
		switch {
		case o.Error != "" && o.Host == "":
			require.Nil(t, dropNote, "one drop note")
			dropNote = &o
			require.Contains(t, o.Error, "left out")
		case o.Error == "":
			require.Equal(t, "h1", o.Host)
			if dropNote != nil {
				lines++
			}
		}
	}
}
