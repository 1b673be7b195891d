package agent

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// TestRing_Bounds: a ring keeps at most maxRingLines lines and
// maxRingBytes of their cost, the newest, numbered in order.
func TestRing_Bounds(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		lines, size int // lines added, bytes each
		kept        int // lines kept
	}{
		"Few":         {lines: 10, size: 10, kept: 10},
		"Lines":       {lines: 3 * maxRingLines, size: 10, kept: maxRingLines},
		"Bytes":       {lines: 3000, size: 1000, kept: maxRingBytes / (1000 + ringLineCost)},
		"LongestLine": {lines: 10, size: 64<<10 + len(" [truncated]"), kept: 3},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRing()
			for i := range tc.lines {
				line := fmt.Sprintf("%08d", i) + strings.Repeat("x", tc.size-8)
				require.Equal(t, uint64(i), r.add(wire.LogLine{Line: line}))
				require.LessOrEqual(t, r.n, maxRingLines)
				require.LessOrEqual(t, r.bytes, maxRingBytes)
			}
			got := r.last(wire.MaxLogTail)
			require.Len(t, got, tc.kept)
			for i, l := range got {
				require.Equal(t, fmt.Sprintf("%08d", tc.lines-tc.kept+i), l.Line[:8], "oldest first, the newest kept")
			}
			require.Equal(t, uint64(tc.lines), r.next)
			require.Len(t, r.last(2), min(2, tc.kept))
		})
	}
}

// TestEncodeTail_Cut: an answer over its bound leaves the oldest lines out
// and says so; one within it keeps every line.
func TestEncodeTail_Cut(t *testing.T) {
	t.Parallel()
	var lines []wire.LogLine
	for i := range 100 {
		lines = append(lines, wire.LogLine{Host: "h1", Pool: "p", Index: i, Line: strings.Repeat("y", 1000)})
	}
	const limit = 20 << 10
	data, err := encodeTail(wire.LogTail{Host: "h1", Pool: "p", Lines: lines, Epoch: "e", Next: 100}, limit)
	require.NoError(t, err)
	require.LessOrEqual(t, len(data), limit)
	var got wire.LogTail
	require.NoError(t, json.Unmarshal(data, &got))
	require.True(t, got.Cut)
	require.NotEmpty(t, got.Lines)
	require.Equal(t, 99, got.Lines[len(got.Lines)-1].Index, "the newest kept")
	require.Equal(t, 100-len(got.Lines), got.Lines[0].Index, "the oldest left out")

	got.Cut = false
	whole, _ := json.Marshal(wire.LogTail{Host: "h1", Pool: "p", Lines: got.Lines, Cut: true, Epoch: "e", Next: 100})
	require.Equal(t, string(whole), string(data), "what json.Marshal gives")

	tail := wire.LogTail{Host: "h1", Pool: "p", Lines: lines[:5], Error: `a "lines":[] in a string`}
	data, err = encodeTail(tail, limit)
	require.NoError(t, err)
	whole, _ = json.Marshal(tail)
	require.Equal(t, string(whole), string(data), "what json.Marshal gives")
	got = wire.LogTail{}
	require.NoError(t, json.Unmarshal(data, &got))
	require.False(t, got.Cut)
	require.Len(t, got.Lines, 5)

	data, err = encodeTail(wire.LogTail{Host: "h1", Pool: "p"}, limit)
	require.NoError(t, err)
	require.JSONEq(t, `{"host":"h1","pool":"p","lines":[],"epoch":"","next":0}`, string(data))
}

// askTail asks host h1 of b for pool's last n lines. An agent just
// started may not have its subscription at the server yet: then the
// answer is empty, its Error "no responders". It may run in a condition
// of require.Eventually: it asserts nothing.
func (b *controlBundle) askTail(t *testing.T, pool string, n int) wire.LogTail {
	t.Helper()
	data, _ := json.Marshal(wire.LogTailRequest{Pool: pool, Tail: n})
	reply := subject.ControlReply(b.nc.NewInbox())
	sub, err := b.nc.SubscribeSync(reply)
	if err != nil {
		return wire.LogTail{Error: err.Error()}
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(b.space.LogTail("h1"), reply, data); err != nil {
		return wire.LogTail{Error: err.Error()}
	}
	m, err := sub.NextMsg(waitLimit)
	if err != nil {
		return wire.LogTail{Error: err.Error()}
	}
	var ans wire.LogTail
	if len(m.Data) == 0 {
		return wire.LogTail{Error: "no responders"}
	}
	if err := json.Unmarshal(m.Data, &ans); err != nil {
		return wire.LogTail{Error: err.Error()}
	}
	return ans
}

// TestAgent_LogTail: a worker's lines, as the host let them out, come back
// from the host's tail in order, with host, pool, index, pid and stream;
// numbered so that the live lines the tail gave can be told apart.
func TestAgent_LogTail(t *testing.T) {
	t.Parallel()
	printer := broker.Spec{
		Name: "printer", Count: 1, Protocol: broker.ProtocolNone, KillTimeout: 2 * time.Second,
		Cmd: []string{"/bin/sh", "-c", `for i in 1 2 3 4 5; do echo "out $i"; done; echo "err 6" >&2; exec sleep 600`},
	}
	b := setupAgent(t, Config{Pools: []broker.Spec{printer}})
	var tail wire.LogTail
	require.Eventually(t, func() bool {
		tail = b.askTail(t, "printer", 100)
		return len(tail.Lines) == 6
	}, waitLimit, 10*time.Millisecond)
	require.Empty(t, tail.Error)
	require.Equal(t, "h1", tail.Host)
	require.Equal(t, uint64(6), tail.Next)
	require.NotEmpty(t, tail.Epoch)
	pid := tail.Lines[0].PID
	require.NotZero(t, pid)
	// stdout's lines in order; stderr's, a pipe of its own, read when it
	// comes.
	var out []string
	for _, l := range tail.Lines {
		if l.Line == "err 6" {
			require.Equal(t, "stderr", l.Stream)
			continue
		}
		require.Equal(t, "stdout", l.Stream)
		out = append(out, l.Line)
	}
	require.Equal(t, []string{"out 1", "out 2", "out 3", "out 4", "out 5"}, out)
	for _, l := range tail.Lines {
		require.Equal(t, "h1", l.Host)
		require.Equal(t, "printer", l.Pool)
		require.Equal(t, 0, l.Index)
		require.Equal(t, pid, l.PID)
	}
	last := b.askTail(t, "printer", 2)
	require.Equal(t, tail.Lines[4:], last.Lines)
	require.Equal(t, tail.Next, last.Next)
	require.Equal(t, tail.Epoch, last.Epoch)

	// The same lines went out live.
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.lines) == 6
	}, waitLimit, 10*time.Millisecond)

	ghost := b.askTail(t, "ghost", 10)
	require.Contains(t, ghost.Error, `no pool "ghost"`)
	require.Empty(t, ghost.Lines)
	bad := b.askTail(t, "printer", wire.MaxLogTail+1)
	require.Contains(t, bad.Error, "tail must be 1 to 1000")
}

// TestAgent_LogTailForgottenWithItsPool: a pool removed by a reload takes
// its ring with it; one added again starts a new epoch.
func TestAgent_LogTailForgottenWithItsPool(t *testing.T) {
	t.Parallel()
	b := setupAgent(t, Config{Pools: []broker.Spec{service("keep", 1, "k"), service("drop", 1, "d")}})
	var before wire.LogTail
	require.Eventually(t, func() bool {
		before = b.askTail(t, "drop", 10)
		return len(before.Lines) == 1
	}, waitLimit, 10*time.Millisecond)

	require.NoError(t, b.a.Reload(t.Context(), []broker.Spec{service("keep", 1, "k")}))
	require.Contains(t, b.askTail(t, "drop", 10).Error, `no pool "drop"`)
	require.NoError(t, b.a.Reload(t.Context(), []broker.Spec{service("keep", 1, "k"), service("drop", 1, "d")}))
	var after wire.LogTail
	require.Eventually(t, func() bool {
		after = b.askTail(t, "drop", 10)
		return len(after.Lines) == 1
	}, waitLimit, 10*time.Millisecond)
	require.NotEqual(t, before.Epoch, after.Epoch)
	require.NotEqual(t, before.Lines[0].PID, after.Lines[0].PID)
}

// FuzzCheckTailRequest: a request of any requester is refused or asks for
// a pool that is a token and 1 to MaxLogTail lines.
func FuzzCheckTailRequest(f *testing.F) {
	for _, s := range []string{`{"pool":"p","tail":1}`, `{"pool":"p","tail":1001}`, `{"pool":"a.b","tail":5}`, `{}`, `[]`, `{"pool":"p","tail":5,"max_bytes":-1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req wire.LogTailRequest
		if checkTailRequest(data, &req) != nil {
			return
		}
		require.NoError(t, subject.Token("pool", req.Pool))
		require.True(t, req.Tail >= 1 && req.Tail <= wire.MaxLogTail)
	})
}
