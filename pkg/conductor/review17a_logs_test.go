package conductor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/conductor-run/conductor/pkg/client"
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

// TestReview17a_TailAnswerOverItsShare: a host's answer to a tail request
// larger than the bytes it was asked for (its share of the 4 MiB a
// reading gathers) is refused, not kept: a host that lies could have
// conductord hold up to the subscription's 4 MiB of its lines, per
// request, whatever its share, and serve them.
func TestReview17a_TailAnswerOverItsShare(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	space, _ := subject.New("default")
	const hosts = 8 // each asked for 512 KiB at most
	for i := range hosts {
		host := fmt.Sprintf("h%d", i)
		n, size := 1, 10
		if i == 0 {
			n, size = 32, 64<<10 // 2 MiB
		}
		var lines []wire.LogLine
		for j := range n {
			lines = append(lines, wire.LogLine{Time: time.Now().UTC(), Host: host, Pool: "p", Stream: "stdout", Line: fmt.Sprintf("%d %s", j, strings.Repeat("x", size))})
		}
		answer, _ := json.Marshal(wire.LogTail{Host: host, Pool: "p", Lines: lines, Epoch: "e", Next: uint64(n)})
		_, err := b.nc.Subscribe(space.LogTail(host), func(m *nats.Msg) { _ = m.Respond(answer) })
		require.NoError(t, err)
		hb, _ := json.Marshal(wire.Heartbeat{
			Host: host, PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
			Pools: []wire.PoolInfo{{Name: "p", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
		})
		require.NoError(t, b.nc.Publish(space.Host(host), hb))
	}
	require.NoError(t, b.nc.Flush())
	require.Eventually(t, func() bool {
		h, err := c.Client().Hosts(context.Background())
		return err == nil && len(h) == hosts
	}, 20*time.Second, 20*time.Millisecond)

	got, ok := tryLogs(srv.URL, "p", "?tail=1000")
	require.True(t, ok)
	lines := 0
	for _, o := range got {
		if o.Host == "h0" && o.Error == "" {
			lines++
		}
	}
	require.Zero(t, lines, "h0 answered 2 MiB when asked for 512 KiB: its lines were served")
	require.Contains(t, got[0].Error, "more than", "h0's answer is refused, saying why: %+v", got[0])
	require.Len(t, got, 1+hosts-1, "a line from each other host")
}

// TestLogs_FollowDropsWhileTheTailsAreAsked: the live lines that come
// while the hosts are asked for their tails (up to 2s, when a host does
// not answer) wait within Config.EventBuffer for a writer that has not
// started; past it they are dropped, and a note says how many, rather
// than the client, which has had nothing to read yet, be cut off as slow.
func TestLogs_FollowDropsWhileTheTailsAreAsked(t *testing.T) {
	t.Parallel()
	const buffer = 64 << 10
	url, nc, cuts := setupEvents(t, conductor.Config{EventBuffer: buffer})
	startPrinter(t, nc, "h1", "printer", `exec sleep 600`)
	require.Eventually(t, func() bool {
		_, ok := tryLogs(url, "printer", "?tail=0")
		return ok
	}, 20*time.Second, 20*time.Millisecond, "h1 is live")
	// h2 says it runs the pool and never answers for its tail: the
	// hosts are asked for 2s.
	space, _ := subject.New("default")
	hb, _ := json.Marshal(wire.Heartbeat{
		Host: "h2", PID: 1, Started: time.Now(), Interval: wire.Duration(time.Minute),
		Pools: []wire.PoolInfo{{Name: "printer", Count: 1, Protocol: "none", State: "running"}}, Workers: []wire.WorkerInfo{},
	})
	_, err := nc.Subscribe(space.LogTail("h2"), func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, nc.Publish(space.Host("h2"), hb))
	require.NoError(t, nc.Flush())

	notes := make(chan string, 16)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/pools/printer/logs?follow=true&tail=1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		for { // reads all it is given, at once
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var o logObject
			if json.Unmarshal(line, &o) == nil && o.Error != "" {
				notes <- o.Error
			}
		}
	}()
	// A busy pool: 16 KiB lines, 1.6 MB/s, for 1.5s, while the hosts are
	// asked (2s: h2 does not answer), then none: what the writer is given
	// once it starts it writes to a client that reads, and nothing is
	// cut. (Lines still coming once it writes would be a race with the
	// client's reads on a loaded machine, past a buffer of 4 lines.)
	line, _ := json.Marshal(wire.LogLine{Time: time.Now().UTC(), Host: "h1", Pool: "printer", Stream: "stdout", Line: strings.Repeat("x", 16<<10)})
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	quiet := time.After(1500 * time.Millisecond)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-pace.C:
			require.NoError(t, nc.Publish(space.Logs("h1", "printer"), line))
		case <-quiet:
			pace.Stop()
		case cut := <-cuts:
			t.Fatalf("a client that reads was cut off: %s", cut.reason)
		case note := <-notes:
			if note == "host h2 did not answer in 2s" {
				pace.Stop()
				continue
			}
			require.Regexp(t, `^\d+ lines of pool printer left out: they came while the hosts were asked for their tails, past the stream's buffer of 65536 bytes$`, note)
			return
		case <-deadline:
			t.Fatal("no note of the lines left out")
		}
	}
}

// TestReview17a_HostileOutput: what a worker prints comes back in the
// tail as valid JSON text, whatever it is: a line over 64 KiB cut and
// marked, bytes that are not UTF-8 replaced, escapes and markup as they
// were (the console sets them as text).
func TestReview17a_HostileOutput(t *testing.T) {
	t.Parallel()
	c, b := setup(t, conductor.Config{})
	srv := serve(t, c)
	startPrinter(t, b.nc, "h1", "printer", `head -c 70000 /dev/zero | tr '\0' a; echo
		printf 'bad \377\376 utf8\n'; printf '\033[31mred\033[0m\n'; echo '<script>alert(1)</script>'
		exec sleep 600`)
	got := tailOf(t, srv.URL, "printer", "?tail=10", 4)
	require.Len(t, got[0].Line, 64<<10+len(" [truncated]"))
	require.True(t, strings.HasSuffix(got[0].Line, " [truncated]"), "the long line is marked cut")
	require.Equal(t, "bad \ufffd\ufffd utf8", got[1].Line)
	require.Equal(t, "\x1b[31mred\x1b[0m", got[2].Line)
	require.Equal(t, "<script>alert(1)</script>", got[3].Line)
}

// TestKnownGap_ClientLogsAsksHostsOfOtherTypes pins a gap (docs/security.md,
// "Not yet"): Client.Logs, over NATS, asks every host whose heartbeat names
// the pool, and the Client's registry of hosts does not know their
// credentials; a host of type squares that says it runs pool other has
// the tail it answers given as other's (its own host id on the lines).
// conductord's GET /v1/pools/{name}/logs asks the hosts of the pool's
// type only (TestReview17a_HostTailOfOtherType). Checking the heartbeats'
// pools against the hosts' types where the heartbeats are published (a
// grant per pool on the heartbeat would not do: one subject carries them
// all), or asking conductord which hosts run a pool, would close it.
func TestKnownGap_ClientLogsAsksHostsOfOtherTypes(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
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

	ops, _ := rc.connectAs(t, "ops")
	cl, err := client.New(ops, client.Config{})
	require.NoError(t, err)
	var got []client.LogLine
	require.Eventually(t, func() bool {
		_ = h1.Publish(space.Host("h1"), hb) // heard by the Client's registry, which listens from its first call
		lines, err := cl.Logs(t.Context(), "other", client.LogsOptions{Tail: 10})
		if err != nil {
			return false
		}
		got = nil
		for l := range lines {
			got = append(got, l)
		}
		return len(got) > 0
	}, 20*time.Second, 20*time.Millisecond, "h1 is heard")
	require.Len(t, got, 1)
	require.Equal(t, "forged by h1", got[0].Line, "gap: h1's tail given as pool other's")
}
