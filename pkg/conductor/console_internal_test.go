package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestConsole_Quantile: the run-time quantiles of a histogram's growth,
// interpolated within their bucket.
func TestConsole_Quantile(t *testing.T) {
	t.Parallel()
	counts := func(byBucket map[int]uint64) []uint64 {
		c := make([]uint64, len(client.HistogramBounds)+1)
		for i, n := range byBucket {
			c[i] = n
		}
		return c
	}
	tests := []struct {
		name          string
		d             runDiff
		q, want, mean float64
	}{
		{"none", runDiff{counts: counts(nil)}, 0.5, 0, 0},
		{"one bucket, its middle", runDiff{counts: counts(map[int]uint64{2: 10}), sum: 0.08}, 0.5, 0.0075, 0.008},
		{"p95 in the upper bucket", runDiff{counts: counts(map[int]uint64{0: 90, 4: 10}), sum: 1}, 0.95, 0.075, 0.01},
		{"past every bound reads as the last", runDiff{counts: counts(map[int]uint64{13: 4}), sum: 4000}, 0.5, 600, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.InDelta(t, tc.want, tc.d.quantile(tc.q), 1e-9)
			require.InDelta(t, tc.mean, tc.d.mean(), 1e-9)
		})
	}
}

// TestConsole_HistoryBounded: at most consolePoints points per type and
// consoleTypes types; a type no longer listed is forgotten; a stream
// starts with the history and the last snapshot.
func TestConsole_HistoryBounded(t *testing.T) {
	t.Parallel()
	h := newConsoleHub()
	pools := make([]client.Pool, consoleTypes+10)
	for i := range pools {
		pools[i] = client.Pool{Type: "t" + strings.Repeat("0", 3-len(itoa(i))) + itoa(i), Succeeded: uint64(i)}
	}
	start := time.Unix(1_700_000_000, 0)
	for i := range consolePoints + 30 {
		h.add(h.snapshot(nil, pools, nil, start.Add(time.Duration(i)*time.Second)))
	}
	require.Len(t, h.series, consoleTypes)
	for typ, pts := range h.series {
		require.Len(t, pts, consolePoints, typ)
		require.Equal(t, start.Add(time.Duration(consolePoints+29)*time.Second).UnixMilli(), pts[len(pts)-1].T)
	}
	require.NotContains(t, h.series, pools[consoleTypes].Type, "the types past the bound, by name")

	h.add(h.snapshot(nil, nil, errors.New("jetstream down"), start.Add(time.Hour)))
	require.Len(t, h.series, consoleTypes, "pools unread: the history stays")

	h.add(h.snapshot(nil, pools[:1], nil, start.Add(time.Hour)))
	require.Len(t, h.series, 1, "a type no longer listed is forgotten")

	first, _, unsubscribe := h.subscribe()
	defer unsubscribe()
	events := strings.Split(strings.TrimSuffix(string(first), "\n\n"), "\n\n")
	require.Len(t, events, 2)
	require.True(t, strings.HasPrefix(events[0], "event: history\ndata: "), events[0])
	var hist consoleHistory
	require.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(events[0], "event: history\ndata: ")), &hist))
	require.Len(t, hist.Points[pools[0].Type], consolePoints)
	require.True(t, strings.HasPrefix(events[1], "event: snapshot\ndata: "), events[1])
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestConsole_RunDiffs: latency comes from what each host's histogram
// grew by since the sample before; a host first seen, or whose workerd
// started again, adds nothing until its next sample.
func TestConsole_RunDiffs(t *testing.T) {
	t.Parallel()
	h := newConsoleHub()
	sq := map[string]bool{"sq": true}
	hist := func(n uint64, sum float64) *client.Histogram {
		c := make([]uint64, len(client.HistogramBounds)+1)
		c[3] = n // up to 50ms
		return &client.Histogram{Counts: c, Sum: sum}
	}
	host := func(started int64, n uint64, sum float64) client.Host {
		return client.Host{Host: "h1", Started: time.Unix(started, 0), Pools: []client.HostPool{{Name: "sq", Run: hist(n, sum)}}}
	}
	require.Empty(t, h.ran([]client.Host{host(1, 100, 3)}, sq), "first seen: its past is not this second's")
	d := h.ran([]client.Host{host(1, 110, 3.3)}, sq)
	require.Equal(t, uint64(10), d["sq"].total())
	require.InDelta(t, 0.03, d["sq"].mean(), 1e-9)
	require.Empty(t, h.ran([]client.Host{host(2, 5, 0.1)}, sq), "started again: counts from its next sample")
	require.Empty(t, h.ran([]client.Host{host(2, 9, 0.2)}, map[string]bool{}), "a type not charted is not kept")
	require.Empty(t, h.prevRun)
}

// TestPump_CutsSlowReader: a stream's pump (stream.go, under the event
// and log streams) queues at most its bound of bytes for a writer
// that does not take them, then cuts the stream; one frame is always taken
// when none waits.
func TestPump_CutsSlowReader(t *testing.T) {
	t.Parallel()
	var cutAt int
	c := &Conductor{cfg: Config{EventBuffer: 100}, log: slog.New(slog.DiscardHandler)}
	c.onEventsCut = func(_ string, buffered int) { cutAt = buffered }
	rec := httptest.NewRecorder()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := &stream{c: c, kind: "console", w: rec, r: httptest.NewRequest(http.MethodGet, "/v1/console/stream", nil),
		rc: http.NewResponseController(rec), ctx: ctx, cancel: cancel}
	in := make(chan []byte)
	p := startPump(s, in, func(frame []byte) []byte { return frame })
	in <- make([]byte, 150) // over the bound, but alone: taken
	require.Equal(t, 150, len((<-p.out).frame))
	in <- make([]byte, 60)
	in <- make([]byte, 40)
	in <- make([]byte, 1) // 101 bytes waiting: cut
	<-p.done
	require.True(t, p.over)
	require.Equal(t, 100, cutAt)
	require.Error(t, ctx.Err(), "the stream is ended")
	_, open := <-p.out
	require.False(t, open, "the writer learns the stream is over")
}

// TestReview17a_ConsoleSlowStreamGetsTheNewest: a console stream that has
// not taken the snapshots handed to it has the newest waiting, one; it
// had the oldest four waiting (stale, shown as live) and missed the
// newest, and, on the shared pump, was cut off once 1 MiB waited, which
// at 2,000 workers (a snapshot is about 480 KB) is two seconds behind: an
// operator on a link under 4 Mbit/s was cut off every few seconds.
// Snapshots supersede each other; the stream is cut only by the write
// timeout, when it does not read at all.
func TestReview17a_ConsoleSlowStreamGetsTheNewest(t *testing.T) {
	t.Parallel()
	h := newConsoleHub()
	_, frames, unsubscribe := h.subscribe()
	defer unsubscribe()
	start := time.Unix(1_700_000_000, 0)
	for i := range 6 {
		h.add(h.snapshot(nil, []client.Pool{{Type: "a", Succeeded: uint64(i)}}, nil, start.Add(time.Duration(i)*time.Second)))
	}
	require.Len(t, frames, 1, "one snapshot waits")
	require.Contains(t, string(<-frames), `"succeeded":5`, "the newest")
}
