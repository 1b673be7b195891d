package agent

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// countHandler counts workerd's log records of one pool: output lines and
// drop reports.
type countHandler struct {
	pool string

	mu      sync.Mutex
	lines   int
	reports int
	dropped int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countHandler) WithGroup(string) slog.Handler            { return h }

func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	var pool string
	var dropped int64
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "pool":
			pool = a.Value.String()
		case "dropped":
			dropped = a.Value.Int64()
		}
		return true
	})
	if pool != h.pool {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case r.Message == "worker output":
		h.lines++
	case strings.HasPrefix(r.Message, "dropped "):
		h.reports++
		h.dropped += dropped
	}
	return nil
}

func (h *countHandler) counts() (lines, reports int, dropped int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lines, h.reports, h.dropped
}

// TestAgent_LogsFlood: a real worker that floods stderr gets no more lines
// in workerd's log than the rate allows, plus one drop report per interval.
func TestAgent_LogsFlood(t *testing.T) {
	t.Parallel()
	const rate, report = 100, 500 * time.Millisecond
	h := &countHandler{pool: "flood"}
	flood := broker.Spec{
		Name: "flood", Protocol: broker.ProtocolNone, KillTimeout: time.Second,
		Cmd: []string{"/bin/sh", "-c", "exec yes flood >&2"},
	}
	start := time.Now()
	b := setupAgent(t, Config{Pools: []broker.Spec{flood}, LogRate: rate, Logger: slog.New(h), logReport: report})
	// The flood runs until 4 reports have come, about 2s.
	require.Eventually(t, func() bool {
		_, reports, _ := h.counts()
		return reports >= 4
	}, waitLimit, 10*time.Millisecond)
	b.a.Stop()
	elapsed := time.Since(start)
	lines, reports, dropped := h.counts()
	t.Logf("%s: %d lines logged, %d reports, %d lines dropped", elapsed, lines, reports, dropped)
	require.LessOrEqual(t, float64(lines), rate*(elapsed.Seconds()+1), "the local log was not limited")
	require.GreaterOrEqual(t, lines, rate, "the burst was not logged")
	require.LessOrEqual(t, float64(reports), elapsed.Seconds()/report.Seconds()+2, "more than a report per interval")
	require.Greater(t, dropped, int64(10*rate), "the drops were not reported")
	// The reading budget holds: at most readFactor times the rate was read.
	require.LessOrEqual(t, float64(int64(lines)+dropped), readFactor*rate*(elapsed.Seconds()+1))
}
