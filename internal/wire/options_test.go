package wire_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/wire"
)

func TestOptions_RoundTrip(t *testing.T) {
	t.Parallel()
	for _, o := range []wire.Options{
		{},
		{Batch: "b1"},
		{Timeout: 1500 * time.Millisecond, MaxAttempts: 7},
		{NotBefore: time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC), Requeued: true},
		{Batch: "b", Timeout: time.Hour, MaxAttempts: 1, NotBefore: time.Unix(1, 0).UTC(), Requeued: true},
		{StateRev: 1 << 40},
	} {
		require.NoError(t, o.Check())
		h := http.Header{}
		o.Encode(h)
		got, bad := wire.DecodeOptions(h)
		require.Empty(t, bad)
		require.Equal(t, o, got)
	}
}

func TestOptions_Check(t *testing.T) {
	t.Parallel()
	require.EqualError(t, wire.Options{Timeout: -time.Second}.Check(), "negative timeout -1s")
	require.EqualError(t, wire.Options{MaxAttempts: -1}.Check(), "max attempts -1 is not 1 or more")
}

func TestDecodeOptions_BadHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ header, value string }{
		{names.HeaderMaxAttempts, "0"},
		{names.HeaderMaxAttempts, "x"},
		{names.HeaderTimeout, "-1s"},
		{names.HeaderTimeout, "soon"},
		{names.HeaderNotBefore, "tomorrow"},
		{names.HeaderStateRev, "0"},
		{names.HeaderStateRev, "-3"},
		{names.HeaderStateRev, "9223372036854775808"},
	} {
		h := http.Header{}
		h.Set(names.HeaderBatch, "b")
		h.Set(tc.header, tc.value)
		o, bad := wire.DecodeOptions(h)
		require.Len(t, bad, 1, "%s: %s", tc.header, tc.value)
		require.Equal(t, tc.header, bad[0].Header)
		require.Equal(t, tc.value, bad[0].Value)
		require.Equal(t, wire.Options{Batch: "b"}, o, "the bad header is left out, the rest kept")
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	d, err := wire.ParseTimeout("30s")
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, d)
	for _, v := range []string{"0s", "-1s", "soon", ""} {
		_, err := wire.ParseTimeout(v)
		require.EqualError(t, err, "want a positive duration such as 30s", v)
	}
	n, err := wire.ParseMaxAttempts("3")
	require.NoError(t, err)
	require.Equal(t, 3, n)
	for _, v := range []string{"0", "-2", "x", "1.5"} {
		_, err := wire.ParseMaxAttempts(v)
		require.EqualError(t, err, "want a whole number, 1 or more", v)
	}
	d, err = wire.ParseDelay("0s")
	require.NoError(t, err)
	require.Zero(t, d)
	_, err = wire.ParseDelay("-1m")
	require.EqualError(t, err, "want a duration such as 10m")
}
