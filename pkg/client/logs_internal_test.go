package client

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
)

// TestLogLineOf_EveryField: logLineOf copies every field of a wire line.
func TestLogLineOf_EveryField(t *testing.T) {
	t.Parallel()
	l := wire.LogLine{
		Time: time.Date(2026, 12, 5, 3, 0, 0, 1, time.UTC), Host: "h1", Pool: "p", Index: 2, PID: 3,
		Stream: "stderr", Line: "x", Dropped: 4,
	}
	v := reflect.ValueOf(l)
	for i := range v.NumField() {
		require.False(t, v.Field(i).IsZero(), "set %s here", v.Type().Field(i).Name)
	}
	want, err := json.Marshal(l)
	require.NoError(t, err)
	got, err := json.Marshal(logLineOf(l))
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got))
}

// TestLogsOptions_Check: the options are checked before anything is asked.
func TestLogsOptions_Check(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pool string
		opt  LogsOptions
		want int
		err  bool
	}{
		{"p", LogsOptions{}, DefaultLogTail, false},
		{"p", LogsOptions{Tail: -1}, 0, false},
		{"p", LogsOptions{Tail: MaxLogTail}, MaxLogTail, false},
		{"p", LogsOptions{Tail: MaxLogTail + 1}, 0, true},
		{"p.q", LogsOptions{}, 0, true},
		{"p", LogsOptions{Host: "a b"}, 0, true},
	} {
		n, err := tc.opt.check(tc.pool)
		if tc.err {
			require.ErrorIs(t, err, ErrBadLogs, "%+v", tc)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, n)
	}
}

// TestLogs_BoundsAreTheWires: the public bound is the one hosts keep
// (written as a number, so that go doc names no internal package).
func TestLogs_BoundsAreTheWires(t *testing.T) {
	require.Equal(t, wire.MaxLogTail, MaxLogTail)
}
