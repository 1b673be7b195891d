package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/version"
)

// TestRun_Version prints conductord's version on stdout and starts
// nothing.
func TestRun_Version(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--version"}, &stdout, &stderr)
	require.NoError(t, err)
	require.Equal(t, 0, exitCode(err, &stderr))
	require.Equal(t, "conductord "+version.Get().String()+"\n", stdout.String())
	require.Empty(t, stderr.String())
}

// TestRun_UsageErrors: a bad --log-format or --log-level, an unknown flag
// or an argument exits 2, with the error and the usage on stderr; -h
// exits 0.
func TestRun_UsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"--log-format", "xml"}, 2, `--log-format "xml": bad value: want text or json`},
		{[]string{"--log-level", "loud"}, 2, `--log-level "loud": bad value: want debug, info, warn or error`},
		{[]string{"--no-such-flag"}, 2, "flag provided but not defined: -no-such-flag"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--stall-after", "0s"}, 2, "bad --stall-after 0s: want a positive duration such as 5m"},
		{[]string{"--sync", "sometimes"}, 2, `--sync: conductor: bad sync "sometimes"`},
		{[]string{"-h"}, 0, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			require.Error(t, err)
			var said bytes.Buffer
			require.Equal(t, tc.code, exitCode(err, &said))
			require.Empty(t, said.String(), "run said it already")
			require.Contains(t, stderr.String(), tc.err)
			require.Contains(t, stderr.String(), "Usage of conductord:")
			require.Contains(t, stderr.String(), "-log-format")
			require.Empty(t, stdout.String())
		})
	}
	var said bytes.Buffer
	require.Equal(t, 1, exitCode(io.ErrUnexpectedEOF, &said), "any other error")
	require.Equal(t, "conductord: unexpected EOF\n", said.String())
}

// TestRun_LogFormatJSON: --log-format json makes every log line a JSON
// object (here the warning about --token, before New refuses a flag).
func TestRun_LogFormatJSON(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	err := run(ctx, []string{"--log-format", "json", "--log-level", "warn", "--token", "x", "--http-host", "evil.example:80",
		"--data", t.TempDir(), "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0"}, io.Discard, &stderr)
	require.ErrorContains(t, err, "bad http host")
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), l)
		require.Equal(t, "WARN", rec["level"])
	}
	require.Contains(t, stderr.String(), "--token on the command line")
}
