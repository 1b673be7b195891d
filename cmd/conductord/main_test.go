package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
		{[]string{"--http-host", "evil.example:80"}, `bad http host "evil.example:80": want a DNS name or an IP address, with no port`},
		{[]string{"--max-pool-size", "-1"}, "bad max pool size -1"},
		{[]string{"--max-batch-bytes", "-1"}, "bad max batch bytes -1"},
		{[]string{"--token-file", "/no/such/file"}, "token file: open /no/such/file: no such file or directory"},
		{[]string{"--token-file", "/dev/null"}, "token file /dev/null: not a regular file"},
		{[]string{"--token", "a", "--token-file", "/etc/hostname"}, "give --token or --token-file, not both"},
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
