package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/cmdline"
	"github.com/conductor-run/conductor/internal/cmdline/cmdlinetest"
)

// TestRun_BadFlags: flags that cannot apply are refused before anything
// starts, each with an error that names it.
func TestRun_BadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--sync", "sometimes"}, `--sync: conductor: bad sync "sometimes": want "always" or "interval"`},
		{[]string{"--sync-interval", "0s"}, "bad --sync-interval 0s: want a positive duration such as 2m"},
		{[]string{"--sync", "always", "--sync-interval", "1s"}, `sync interval 1s applies to sync "interval"`},
		{[]string{"--sync", "always", "--nats-url", "nats://127.0.0.1:4222"}, "with a NATS URL the store is that server's"},
		{[]string{"--sync-interval", "1s", "--memory"}, "with memory storage nothing is written to disk"},
		{[]string{"--storage-reserve", "-1"}, "bad storage reserve -1"},
		{[]string{"--replicas", "3"}, "replicas 3 (--replicas) need a NATS cluster (--nats-url)"},
		{[]string{"--replicas", "6", "--nats-url", "nats://127.0.0.1:4222"}, "bad replicas 6 (--replicas): want 1 to 5"},
		{[]string{"--http-host", "evil.example:80"}, `bad http host "evil.example:80": want a DNS name or an IP address, with no port`},
		{[]string{"--max-pool-size", "-1"}, "bad max pool size -1"},
		{[]string{"--max-batch-bytes", "-1"}, "bad max batch bytes -1"},
		{[]string{"--token-file", "/no/such/file"}, "token file: open /no/such/file: no such file or directory"},
		{[]string{"--token-file", "/dev/null"}, "token file /dev/null: not a regular file"},
		{[]string{"--token", "a", "--token-file", "/etc/hostname"}, "give --token or --token-file, not both"},
		{[]string{"--cluster-routes", "nats-route://a:6222"}, "need a route listener (--cluster HOST:PORT)"},
		{[]string{"--cluster", "127.0.0.1:6222"}, "--cluster needs the cluster's nodes (--cluster-routes"},
		{[]string{"--cluster", "0.0.0.0:6222", "--cluster-routes", "nats-route://a:6222,nats-route://b:6222"}, "would take routes beyond this machine with no secret"},
		{[]string{"--cluster", "127.0.0.1:6222", "--cluster-routes", "nats-route://u:p@a:6222"}, "no user in a route"},
		{[]string{"--cluster", "127.0.0.1:6222", "--cluster-routes", "nats-route://a:6222", "--nats-url", "nats://127.0.0.1:4222"}, "give one of them"},
		{[]string{"--cluster", "127.0.0.1:6222", "--cluster-routes", "nats-route://a:6222", "--cluster-secret-file", "/no/such/file"}, "--cluster-secret-file: token file: open /no/such/file"},
	} {
		t.Run(tc.err, func(t *testing.T) {
			// Bounded: were the flags taken, run would serve until ctx ends.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stderr bytes.Buffer
			err := run(ctx, append(tc.args, "--data", t.TempDir(), "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0"), io.Discard, &stderr)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestMain(m *testing.M) { cmdlinetest.Main(m, main) }

// TestMain_ExitCodes runs conductord (this test binary, see TestMain): a bad
// --log-format or --log-level exits 2 with the usage on stderr, --version
// exits 0 with the version on stdout.
func TestMain_ExitCodes(t *testing.T) {
	t.Parallel()
	cmdlinetest.CheckExitCodes(t, "conductord")
}

// TestRun_Version prints conductord's version on stdout and starts nothing.
func TestRun_Version(t *testing.T) {
	t.Parallel()
	cmdlinetest.CheckVersion(t, "conductord", run)
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
			require.Equal(t, tc.code, cmdline.ExitCode("conductord", err, &said))
			require.Empty(t, said.String(), "run said it already")
			require.Contains(t, stderr.String(), tc.err)
			require.Contains(t, stderr.String(), "Usage of conductord:")
			require.Contains(t, stderr.String(), "-log-format")
			require.Empty(t, stdout.String())
		})
	}
	var said bytes.Buffer
	require.Equal(t, 1, cmdline.ExitCode("conductord", io.ErrUnexpectedEOF, &said), "any other error")
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

// readyWriter is a stderr that closes ready at conductord's "ready" line.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "conductord ready") {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// --max-payload under 1 MiB (the limit before large payloads, which
// deployments lowered) with no --inline-payload: the inline limit's
// default is 1 MiB, passed as if given, and New refused it as over the
// payload limit: conductord did not start after the upgrade. The inline
// limit given no flag is at most the payload limit now.
func TestAttackPayload_MaxPayloadUnderTheInlineDefaultStarts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stderr := &readyWriter{ready: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--max-payload", "262144", "--data", t.TempDir(), "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0"}, io.Discard, stderr)
	}()
	select {
	case <-stderr.ready:
		cancel()
		require.NoError(t, <-done)
	case err := <-done:
		t.Fatalf("conductord did not start: %v", err)
	}
	// Given, it is checked against the payload limit all the same.
	err := run(context.Background(), []string{"--max-payload", "262144", "--inline-payload", "524288", "--data", t.TempDir(), "--nats", "127.0.0.1:0", "--http", "127.0.0.1:0"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "bad inline payload limit")
}
